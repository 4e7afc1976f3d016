"""Every asset check passes on real artifacts and fails on a crafted bad copy of them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.checks import (
    gradient_datastore_checks,
    raw_pool_checks,
    scored_subsets_checks,
    target_gradients_checks,
)
from assets.subset import scored_subset_checks
from curation.datastore import open_datastore


def _results(check, **inputs) -> dict[str, bool]:
    return {r.check_name: r.passed for r in check(**inputs)}


def _outputs(materialized):
    result = materialized.result
    return {"raw_pool": result.output_for_node("splits", "raw_pool"),
            "gradient_datastore": result.output_for_node("gradient_datastore"),
            "target_gradients": result.output_for_node("target_gradients"),
            "scored_subsets": result.output_for_node("scored_subsets")}


def test_every_check_passes_on_the_materialized_graph(materialized):
    evaluations = materialized.result.get_asset_check_evaluations()
    names = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in evaluations}
    assert names == {
        ("raw_pool", "ids_unique"): True,
        ("gradient_datastore", "finite_gradients"): True,
        ("gradient_datastore", "shape_matches_pool"): True,
        ("target_gradients", "finite_gradients"): True,
        ("scored_subsets", "ids_unique"): True,
        ("scored_subsets", "budget_respected"): True,
        ("scored_subsets", "lineage_complete"): True,
    }


def test_pool_with_a_duplicate_id_fails_ids_unique(materialized, tmp_path):
    table = pq.read_table(_outputs(materialized)["raw_pool"])
    ids = table.column("id").to_pylist()
    ids[5] = ids[4]
    bad = tmp_path / "pool.parquet"
    pq.write_table(table.set_column(0, "id", pa.array(ids)), bad)
    assert _results(raw_pool_checks, raw_pool=str(bad)) == {"ids_unique": False}


def _corrupt_copy(directory: str, tmp_path: Path) -> str:
    """A copy of a real gradient store with one NaN written into its first shard."""
    copy = tmp_path / Path(directory).name
    shutil.copytree(directory, copy)
    store = open_datastore(copy, verify=False)
    shard_file = copy / store.manifest["shards"][0]["file"]
    array = np.load(shard_file)
    array[3, 0, 0] = np.nan
    np.save(shard_file, array)
    return str(copy)


def test_a_nan_in_a_store_fails_finite_gradients(materialized, tmp_path):
    outputs = _outputs(materialized)
    stores = {kind: _corrupt_copy(d, tmp_path / kind) if kind == "adam" else d
              for kind, d in outputs["gradient_datastore"].items()}
    assert _results(gradient_datastore_checks, gradient_datastore=stores,
                    raw_pool=outputs["raw_pool"]) == {"finite_gradients": False,
                                                      "shape_matches_pool": True}
    target = {k: _corrupt_copy(d, tmp_path / f"target-{k}")
              for k, d in outputs["target_gradients"].items()}
    assert _results(target_gradients_checks, target_gradients=target) == {
        "finite_gradients": False}


def test_a_store_of_another_pool_order_fails_shape_matches_pool(materialized, tmp_path):
    outputs = _outputs(materialized)
    table = pq.read_table(outputs["raw_pool"])
    reversed_pool = tmp_path / "pool.parquet"
    pq.write_table(table.take(pa.array(np.arange(table.num_rows)[::-1])), reversed_pool)
    assert _results(gradient_datastore_checks, gradient_datastore=outputs["gradient_datastore"],
                    raw_pool=str(reversed_pool)) == {"finite_gradients": True,
                                                     "shape_matches_pool": False}
    truncated = tmp_path / "short.parquet"
    pq.write_table(table.slice(0, 100), truncated)
    assert not _results(gradient_datastore_checks,
                        gradient_datastore=outputs["gradient_datastore"],
                        raw_pool=str(truncated))["shape_matches_pool"]


def _crafted_subset(record: dict, tmp_path: Path, *, ids=None, lineage_edit=None) -> dict:
    """A copy of a real subset (Parquet + lineage) with its ids or lineage changed."""
    table = pq.read_table(record["path"])
    if ids is not None:
        table = pa.table({"id": pa.array(ids, pa.string()),
                          "weight": pa.array(np.ones(len(ids)), pa.float32()),
                          "score": pa.array(np.zeros(len(ids)), pa.float32()),
                          "rank": pa.array(np.arange(len(ids)), pa.int32())})
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{record['selection_id']}.parquet"
    pq.write_table(table, path)
    lineage = json.loads(Path(record["path"]).with_suffix(".lineage.json").read_text())
    if lineage_edit is not None:
        lineage_edit(lineage)
    path.with_suffix(".lineage.json").write_text(json.dumps(lineage))
    return {**record, "path": str(path)}


def _bad_subsets(materialized, tmp_path: Path) -> dict[str, dict]:
    outputs = _outputs(materialized)
    gtp = next(s for s in outputs["scored_subsets"] if s["method"] == "gtp")
    ids = pq.read_table(gtp["path"]).column("id").to_pylist()
    pool_ids = pq.read_table(outputs["raw_pool"]).column("id").to_pylist()
    extra = [i for i in pool_ids if i not in ids]
    return {
        "ids_unique": _crafted_subset(gtp, tmp_path / "dup", ids=[*ids[:-1], ids[0]]),
        "budget_respected": _crafted_subset(gtp, tmp_path / "over", ids=[*ids, extra[0]]),
        "lineage_complete": _crafted_subset(
            gtp, tmp_path / "lineage",
            lineage_edit=lambda lineage: lineage["config"].update(budget=0.5)),
    }


def test_each_subset_check_fails_on_its_crafted_bad_subset(materialized, tmp_path):
    outputs = _outputs(materialized)
    for name, bad in _bad_subsets(materialized, tmp_path).items():
        results = _results(scored_subsets_checks, scored_subsets=[*outputs["scored_subsets"], bad],
                           raw_pool=outputs["raw_pool"])
        assert results == {n: n != name for n in results}, name
        # The partitioned subset's checks are the same invariants, and they block releases.
        assert _results(scored_subset_checks, scored_subset=bad, raw_pool=outputs["raw_pool"]) \
            == {n: n != name for n in results}, name


def test_a_subset_of_ids_outside_the_pool_fails_budget_respected(materialized, tmp_path):
    outputs = _outputs(materialized)
    gtp = next(s for s in outputs["scored_subsets"] if s["method"] == "gtp")
    bad = _crafted_subset(gtp, tmp_path, ids=["not-a-pool-id", "also-not"])
    assert not _results(scored_subset_checks, scored_subset=bad,
                        raw_pool=outputs["raw_pool"])["budget_respected"]


@pytest.mark.parametrize("edit", [
    lambda lineage: lineage.pop("pool_id"),
    lambda lineage: lineage.update(datastore_id=None),
    lambda lineage: lineage.update(proxy_checkpoints=["abc"]),
    lambda lineage: lineage.update(code_version={"git_sha": "HEAD"}),
    lambda lineage: lineage.update(created_at="yesterday"),
])
def test_each_missing_lineage_field_fails_lineage_complete(materialized, tmp_path, edit):
    outputs = _outputs(materialized)
    gtp = next(s for s in outputs["scored_subsets"] if s["method"] == "gtp")
    bad = _crafted_subset(gtp, tmp_path, lineage_edit=edit)
    assert not _results(scored_subset_checks, scored_subset=bad,
                        raw_pool=outputs["raw_pool"])["lineage_complete"]


def test_release_gating_checks_are_blocking():
    specs = list(scored_subset_checks.check_specs)
    assert {s.name for s in specs} == {"ids_unique", "budget_respected", "lineage_complete"}
    assert all(s.blocking for s in specs)
