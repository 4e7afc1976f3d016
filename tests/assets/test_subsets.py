"""The per-config assets: partitions by config hash, releases, parallel writers."""

import subprocess
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.release import dataset_release
from assets.subset import SELECTOR_CONFIGS, scored_subset, scored_subset_checks
from curation.catalog import Catalog
from curation.lineage import config_hash
from pipelines.per_config import MAX_RUNS_PER_TICK, new_selector_configs
from resources import CatalogResource, DvcRepository
from tests.assets.conftest import UPSTREAM
from tests.conftest import REPO, init_dvc_repo

SUBSET_ASSETS = [*(dg.AssetSpec(k) for k in UPSTREAM), scored_subset, scored_subset_checks]


def _core_subset(materialized, method: str, budget: float) -> dict:
    return next(s for s in materialized.result.output_for_node("scored_subsets")
                if s["method"] == method and s["budget"] == budget)


def _materialize(materialized, key: str, assets=SUBSET_ASSETS, **kwargs):
    materialized.instance.add_dynamic_partitions(SELECTOR_CONFIGS.name, [key])
    return dg.materialize(assets, partition_key=key, instance=materialized.instance,
                          resources=kwargs.pop("resources", materialized.resources()), **kwargs)


def test_sensor_turns_every_registered_config_into_a_partition_and_a_run(materialized):
    catalog = CatalogResource(path=str(materialized.catalog_path))
    registered = [c["config_hash"] for c in Catalog(materialized.catalog_path).selector_configs()]
    assert len(registered) >= 10  # random x2 seeds, less, el2n, gtp at two budgets
    with dg.instance_for_test() as instance:
        seen = []
        while True:
            result = new_selector_configs(dg.build_sensor_context(
                instance=instance, resources={"catalog": catalog}))
            if isinstance(result, dg.SkipReason):
                break
            keys = [r.partition_key for r in result.run_requests]
            assert 0 < len(keys) <= MAX_RUNS_PER_TICK
            assert [r.run_key for r in result.run_requests] == keys
            (request,) = result.dynamic_partitions_requests
            assert list(request.partition_keys) == keys
            instance.add_dynamic_partitions(SELECTOR_CONFIGS.name, keys)
            seen += keys
        assert seen == registered
        assert "no new selector configs" in result.skip_message


def test_same_config_same_partition_same_ids(materialized):
    core = _core_subset(materialized, "gtp", 0.05)
    key = core["config_hash"]
    catalog = Catalog(materialized.catalog_path)
    config = catalog.selector_config(key)
    # The partition key is the canonical hash: key order and number spelling do not matter.
    respelled = {k: (5e-2 if k == "budget" else v) for k, v in reversed(list(config.items()))}
    assert config_hash(respelled) == key
    assert catalog.register_config(respelled) == key
    assert [c["config_hash"] for c in catalog.selector_configs()].count(key) == 1

    runs = [_materialize(materialized, key) for _ in range(2)]
    outputs = [r.output_for_node("scored_subset") for r in runs]
    assert outputs[0]["selection_id"] == outputs[1]["selection_id"] == core["selection_id"]
    ids = [pq.read_table(o["path"]).column("id").to_pylist() for o in outputs]
    assert ids[0] == ids[1] == pq.read_table(core["path"]).column("id").to_pylist()
    assert len(ids[0]) == 15
    for run in runs:
        (event,) = run.get_asset_materialization_events()
        materialization = event.step_materialization_data.materialization
        assert materialization.partition == key
        assert materialization.metadata["k"].value == 15
        assert "subset_share" in materialization.metadata["label_mix"].value
        assert "data:image/png;base64" in materialization.metadata["label_shares"].value
        assert {e.check_name: e.passed for e in run.get_asset_check_evaluations()} == {
            "ids_unique": True, "budget_respected": True, "lineage_complete": True}


def test_an_unregistered_partition_fails_naming_the_key(materialized):
    result = _materialize(materialized, "0123456789abcdef", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "selector config '0123456789abcdef' is not registered" in str(
        failure.step_failure_data.error)


def test_release_job_releases_a_checked_subset_once(materialized, tmp_path):
    key = _core_subset(materialized, "gtp", 0.1)["config_hash"]
    repo = init_dvc_repo(tmp_path / "project", tmp_path / "remote")
    resources = materialized.resources(dvc=DvcRepository(repo_root=str(repo)))
    run_config = {"ops": {"dataset_release": {"config": {"version": "2024.06-gtp"}}}}
    first = _materialize(materialized, key, [*SUBSET_ASSETS, dataset_release],
                         resources=resources, run_config=run_config)
    assert first.success
    release = first.output_for_node("dataset_release")
    assert release["n_rows"] == 30
    assert (repo / "releases" / "2024.06-gtp.dvc").exists()
    metadata = next(e.step_materialization_data.materialization.metadata
                    for e in first.get_asset_materialization_events()
                    if e.asset_key.to_user_string() == "dataset_release")
    assert "# Dataset release 2024.06-gtp" in metadata["card"].value
    assert "data.parquet" in metadata["files"].value
    assert Catalog(materialized.catalog_path).release("2024.06-gtp")["config_hash"] == key

    again = _materialize(materialized, key, [*SUBSET_ASSETS, dataset_release],
                         resources=resources, run_config=run_config, raise_on_error=False)
    assert not again.success
    failure = next(e for e in again.all_events if e.is_step_failure)
    assert "release '2024.06-gtp' already exists" in str(failure.step_failure_data.error)


def test_a_failing_blocking_check_stops_the_release(materialized, tmp_path, monkeypatch):
    # A config of its own, so the crafted lineage cannot touch other tests' subsets.
    key = Catalog(materialized.catalog_path).register_config(
        {"selector": "random", "seed": 99, "budget": 0.05})
    # The one fault we cannot produce for real: lineage written without a code version.
    monkeypatch.setattr("curation.lineage.code_version", lambda: {"git_sha": "unknown"})
    repo = init_dvc_repo(tmp_path / "project", tmp_path / "remote")
    result = _materialize(
        materialized, key, [*SUBSET_ASSETS, dataset_release], raise_on_error=False,
        resources=materialized.resources(dvc=DvcRepository(repo_root=str(repo))),
        run_config={"ops": {"dataset_release": {"config": {"version": "blocked"}}}})
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {"ids_unique": True, "budget_respected": True,
                           "lineage_complete": False}
    released = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert released == {"scored_subset"}
    assert not (repo / "releases").exists()
    assert "blocked" not in Catalog(materialized.catalog_path).releases().column(
        "version").to_pylist()


@pytest.mark.slow
def test_parallel_materializations_lose_no_catalog_rows(materialized):
    """Three `dagster asset materialize` processes (multiprocess executor) write at once."""
    catalog = Catalog(materialized.catalog_path)
    keys = [catalog.register_config({"selector": "random", "seed": s, "budget": 0.1})
            for s in (11, 12, 13)]
    materialized.instance.add_dynamic_partitions(SELECTOR_CONFIGS.name, keys)
    env = {**materialized.env(), "PYTHONPATH": str(REPO)}
    dagster = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "dagster"
    dagster = dagster if dagster.exists() else Path(__import__("sys").executable).with_name(
        "dagster")
    started = time.monotonic()
    processes = [subprocess.Popen(
        [str(dagster), "asset", "materialize", "-m", "pipelines.definitions",
         "--select", "scored_subset", "--partition", key],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for key in keys]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "RUN_SUCCESS" in output
    rows = catalog.query(
        "SELECT s.config_hash, s.k, count(m.id) AS members FROM selections s "
        "LEFT JOIN selection_members m USING (selection_id) "
        "WHERE s.config_hash IN (?, ?, ?) GROUP BY ALL ORDER BY 1", keys).to_pylist()
    assert [(r["config_hash"], r["k"], r["members"]) for r in rows] == \
        [(k, 30, 30) for k in sorted(keys)]
    totals = catalog.query(
        "SELECT (SELECT count(*) FROM selection_members) AS members, "
        "(SELECT sum(k) FROM selections) AS expected, "
        "(SELECT count(*) FROM examples) AS examples").to_pylist()[0]
    assert totals["members"] == totals["expected"]
    assert totals["examples"] == 300 + 20 + 200
    print(f"3 parallel runs in {time.monotonic() - started:.0f} s")


@pytest.mark.parametrize("version", ["v 1", "../escape", "", "v1.dvc"])
def test_a_bad_release_version_is_refused_naming_the_field(version):
    from pydantic import ValidationError

    from assets.release import ReleaseConfig

    with pytest.raises(ValidationError, match="version"):
        ReleaseConfig(version=version)
    assert ReleaseConfig(version="2024.06-rc_1").version == "2024.06-rc_1"


def test_a_distilled_set_from_its_asset_is_in_the_catalog_and_releases(materialized, tmp_path):
    from assets.distill import distilled_set
    from curation.release import create_release

    key = Catalog(materialized.catalog_path).register_config(
        {"selector": "random", "seed": 8, "budget": 0.5})
    result = _materialize(
        materialized, key, [*SUBSET_ASSETS, dg.AssetSpec("test_set"), distilled_set],
        run_config={"ops": {"distilled_set": {"config": {
            "per_class": 1, "expert_epochs": 2, "expert_lr": 1e-2, "eval_seeds": [0]}}}})
    output = result.output_for_node("distilled_set")
    catalog = Catalog(materialized.catalog_path)
    row = catalog.distilled_set(output["distilled_id"])
    assert row["n"] == 10 and row["method"] == "real"
    assert row["selection_id"] == result.output_for_node("scored_subset")["selection_id"]

    repo = init_dvc_repo(tmp_path / "project", tmp_path / "remote")
    record = create_release(catalog, output["distilled_id"], "distilled-v1", repo_root=repo,
                            kind="distilled")
    released = pq.read_table(Path(record["directory"]) / "data.parquet")
    assert released.equals(pq.read_table(output["distilled"]))
    source = released.column("source_id")[0].as_py()
    assert "distilled-v1" in catalog.releases_containing(source).column("version").to_pylist()
