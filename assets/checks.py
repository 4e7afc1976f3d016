"""Asset checks on the shared graph: one check per invariant, one op per asset.

The invariants live in ``curation.checks``. Checks of the same asset share one op (a
``multi_asset_check``), so the multiprocess executor starts one process per checked asset
rather than one per check. They read the stored artifacts themselves, not the validated
in-memory objects, so a file damaged or replaced after materialization fails here.
"""

import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from assets._metadata import check_results, check_specs
from curation import checks
from curation.datastore import open_datastore


def ids_of(path: str) -> list[str]:
    return pq.read_table(path, columns=["id"]).column("id").to_pylist()


def combined(outcomes: dict[str, checks.CheckOutcome]) -> checks.CheckOutcome:
    """One outcome over several parts (feature kinds, subsets): failed if any part failed."""
    failed = {name: o for name, o in outcomes.items() if not o.passed}
    shown = failed or dict(list(outcomes.items())[:4])
    description = "; ".join(f"{name}: {o.description}" for name, o in shown.items())
    return checks.CheckOutcome(not failed, description,
                               {"checked": len(outcomes), "failed": len(failed)})


@dg.multi_asset_check(specs=check_specs("raw_pool", {
    "ids_unique": "Every example of the stored pool file has its own id."}))
def raw_pool_checks(raw_pool: str):
    yield from check_results("raw_pool", {"ids_unique": checks.unique_ids(ids_of(raw_pool),
                                                                      "pool ids")})


@dg.multi_asset_check(
    specs=check_specs("gradient_datastore", {
        "finite_gradients": "No NaN or infinite value in any shard of any feature kind.",
        "shape_matches_pool": "One row per pool example, in pool order; shards match the "
                              "manifest."}, deps=("raw_pool",)),
    ins={"gradient_datastore": dg.AssetIn("gradient_datastore"), "raw_pool": dg.AssetIn("raw_pool")})
def gradient_datastore_checks(gradient_datastore: dict, raw_pool: str):
    stores = {kind: open_datastore(d, verify=False) for kind, d in gradient_datastore.items()}
    pool_ids = ids_of(raw_pool)
    yield from check_results("gradient_datastore", {
        "finite_gradients": combined({k: checks.finite_gradients(s) for k, s in stores.items()}),
        "shape_matches_pool": combined({k: checks.datastore_matches_pool(s, pool_ids)
                                        for k, s in stores.items()})})


@dg.multi_asset_check(specs=check_specs("target_gradients", {
    "finite_gradients": "No NaN or infinite value in the target set's gradient store."}),
    ins={"target_gradients": dg.AssetIn("target_gradients")})
def target_gradients_checks(target_gradients: dict):
    yield from check_results("target_gradients", {"finite_gradients": combined({
        kind: checks.finite_gradients(open_datastore(d, verify=False))
        for kind, d in target_gradients.items()})})


SUBSET_CHECKS = {
    "ids_unique": "The subset names each example once.",
    "budget_respected": "The subset fits its budget and comes from the pool.",
    "lineage_complete": "The lineage names config, pool, datastore, proxy checkpoints and code.",
}


def subset_outcomes(subsets: list[dict], pool_ids: list[str]) -> dict[str, checks.CheckOutcome]:
    """The three subset invariants over records with ``path``, ``budget``, ``selection_id``."""
    per = {name: {} for name in SUBSET_CHECKS}
    for s in subsets:
        ids = ids_of(s["path"])
        lineage = json.loads(Path(s["path"]).with_suffix(".lineage.json").read_text())
        per["ids_unique"][s["selection_id"]] = checks.unique_ids(ids)
        per["budget_respected"][s["selection_id"]] = checks.budget_respected(
            ids, s["budget"], pool_ids)
        per["lineage_complete"][s["selection_id"]] = checks.lineage_complete(lineage)
    return {name: combined(outcomes) for name, outcomes in per.items()}


@dg.multi_asset_check(specs=check_specs("scored_subsets", SUBSET_CHECKS, deps=("raw_pool",)),
                      ins={"scored_subsets": dg.AssetIn("scored_subsets"),
                           "raw_pool": dg.AssetIn("raw_pool")})
def scored_subsets_checks(scored_subsets: list[dict], raw_pool: str):
    yield from check_results("scored_subsets", subset_outcomes(scored_subsets, ids_of(raw_pool)))


CHECKS = [raw_pool_checks, gradient_datastore_checks, target_gradients_checks,
          scored_subsets_checks]
