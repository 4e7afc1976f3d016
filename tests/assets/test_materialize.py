import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from curation.catalog import Catalog
from pipelines.definitions import UNPARTITIONED_ASSETS
from resources import ArtifactStore, CatalogResource
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.slow

WITHOUT_BENCHMARK = dg.AssetSelection.all() - dg.AssetSelection.assets("benchmark_report")


def _materialize(home: Path, run_config: dict, **kwargs) -> dg.ExecuteInProcessResult:
    if kwargs.get("selection") is WITHOUT_BENCHMARK:
        run_config["ops"].pop("benchmark_report", None)
    resources = {"artifacts": ArtifactStore(root=str(home / "artifacts")),
                 "catalog": CatalogResource(path=str(home / "catalog.duckdb"))}
    with dg.instance_for_test(temp_dir=str(home / "dagster_home")) as instance:
        return dg.materialize(UNPARTITIONED_ASSETS, resources=resources, run_config=run_config,
                              instance=instance, **kwargs)


def test_whole_graph_materializes_on_tiny_real_data(home):
    result = _materialize(home, tiny_run_config("digits"))
    assert result.success
    subsets = result.output_for_node("scored_subsets")
    # random x 2 seeds + less + el2n + gtp, at two budgets each
    assert len(subsets) == (2 + 1 + 1 + 1) * 2
    for subset in subsets:
        table = pq.read_table(subset["path"])
        assert table.num_rows == subset["k"] == round(subset["budget"] * 300)
        lineage = json.loads(Path(subset["path"]).with_suffix(".lineage.json").read_text())
        assert lineage["config_hash"] == subset["config_hash"]
        # Lineage names what the selector read: random reads nothing, LESS the Adam store.
        assert len(lineage["proxy_checkpoints"]) == (0 if subset["method"] == "random" else 4)
        used = {"random": set(), "el2n": set(), "less": {"adam"}, "gtp": {"sgd"}}[subset["method"]]
        assert set(lineage["datastores"]) == used
    records = result.output_for_node("subset_evaluation")
    full = [r for r in records if r["method"] == "full"]
    assert len(full) == 1 and full[0]["n_selected"] == 300 and full[0]["test_accuracy"] > 0.85

    catalog = Catalog(home / "catalog.duckdb")
    counts = catalog.query(
        "SELECT (SELECT count(*) FROM examples) AS examples, "
        "(SELECT count(*) FROM selections) AS selections, "
        "(SELECT count(*) FROM evaluations) AS evaluations").to_pylist()[0]
    assert counts == {"examples": 300 + 20 + 200, "selections": 10, "evaluations": 10}

    materializations = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()}
    assert materializations["raw_pool"]["rows"].value == 300
    assert "labels" in materializations["raw_pool"]
    assert "gradient_norms" in materializations["gradient_datastore"]
    assert "| method" in materializations["subset_evaluation"]["accuracy"].value
    report = materializations["benchmark_report"]
    assert report["runs"].value == 3  # full + random + gtp, one seed, one budget
    assert report["plot"].value.startswith("![plot](data:image/png;base64,")


def test_rematerializing_reproduces_the_same_selections(home):
    config = tiny_run_config("digits", methods=("random", "gtp"))
    first = _materialize(home, config, selection=WITHOUT_BENCHMARK).output_for_node(
        "scored_subsets")
    second = _materialize(home, config, selection=WITHOUT_BENCHMARK).output_for_node(
        "scored_subsets")
    for a, b in zip(first, second, strict=True):
        assert a["selection_id"] == b["selection_id"]
        assert pq.read_table(a["path"]).column("id") == pq.read_table(b["path"]).column("id")


def test_selector_missing_its_store_fails_clearly(home):
    config = tiny_run_config("digits", methods=("less",))
    config["ops"]["gradient_datastore"]["config"]["kinds"] = ["sgd"]
    result = _materialize(home, config, raise_on_error=False, selection=WITHOUT_BENCHMARK)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "no 'adam' gradient store" in str(failure.step_failure_data.error)


def test_benchmark_report_with_a_causal_lm_proxy_reports_perplexity(home):
    config = tiny_run_config("targeted-text")
    config["ops"]["splits"]["config"].update(pool_size=80, target_size=8, test_size=20)
    config["ops"]["benchmark_report"]["config"].update(proxy="causal-lm", pretrain_docs=100)
    selection = dg.AssetSelection.assets("benchmark_report").upstream(depth=1) | \
        dg.AssetSelection.assets("benchmark_report")
    config["ops"] = {k: v for k, v in config["ops"].items() if k in ("splits", "benchmark_report")}
    result = _materialize(home, config, selection=selection)
    assert result.success
    report = next(e.step_materialization_data.materialization.metadata
                  for e in result.get_asset_materialization_events()
                  if e.asset_key.to_user_string() == "benchmark_report")
    assert "| method" in report["perplexity"].value and "accuracy" not in report
    records = json.loads(Path(report["results"].value).read_text())
    assert {r["method"] for r in records} == {"base", "full", "warmup", "random", "gtp"}
    assert all(r["test_perplexity"] > 1 for r in records)


def test_the_graph_runs_with_a_causal_lm_proxy(home):
    config = tiny_run_config("targeted-text", methods=("random", "less", "gtp"))
    config["ops"]["splits"]["config"].update(pool_size=80, target_size=8, test_size=20)
    config["ops"]["warmup_proxy"]["config"] = {"kind": "causal-lm", "fraction": 0.25,
                                               "epochs": 2, "checkpoints": 2}
    config["ops"]["scored_subsets"]["config"].update(budgets=[0.1], random_seeds=[0])
    result = _materialize(home, config, selection=WITHOUT_BENCHMARK)
    assert result.success
    metadata = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
                for e in result.get_asset_materialization_events()}
    assert "test_perplexity" in metadata["warmup_proxy"]["checkpoints"].value
    stores = result.output_for_node("gradient_datastore")
    for directory in stores.values():
        manifest = json.loads((Path(directory) / "manifest.json").read_text())
        assert manifest["shape"][1] == 2 and all("lora_" in n for n in manifest["param_names"])
    for subset in result.output_for_node("scored_subsets"):
        assert pq.read_table(subset["path"]).num_rows == subset["k"] == 8
    records = result.output_for_node("subset_evaluation")
    assert {r["method"] for r in records} == {"random", "less", "gtp", "full"}
    assert all(r["test_perplexity"] > 1 and "test_accuracy" not in r for r in records)
    assert "| method" in metadata["subset_evaluation"]["perplexity"].value
