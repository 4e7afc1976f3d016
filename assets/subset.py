"""scored_subset[config]: one subset per registered selector config, partitioned by its hash.

The partition key is the canonical hash of the selector config (``curation.lineage``), so the
UI lists every subset by the config that made it. The config itself is read from the catalog
(``selector_configs``), where ``scored_subsets`` and ``curation catalog register-config`` put
it. Three blocking checks gate everything downstream in the same run (``dataset_release``).
"""

import time

import dagster as dg

from assets import _metadata as md
from assets.checks import SUBSET_CHECKS, ids_of, subset_outcomes
from curation.pool import load_pool
from curation.selection import inputs_from_artifacts, select_and_save, selector_from_config
from resources import ArtifactStore, CatalogResource

SELECTOR_CONFIGS = dg.DynamicPartitionsDefinition(name="selector_config")


@dg.asset(partitions_def=SELECTOR_CONFIGS, kinds={"parquet", "duckdb"}, group_name="subsets",
          description="The subset one selector config picks, keyed by the config's canonical "
                      "hash; Parquet + lineage JSON, recorded in the catalog.")
def scored_subset(context: dg.AssetExecutionContext, artifacts: ArtifactStore,
                  catalog: CatalogResource, raw_pool: str, target_set: str, model_inputs: dict,
                  gradient_datastore: dict, target_gradients: dict,
                  warmup_proxy: str) -> dg.Output[dict]:
    cat = catalog.catalog()
    selector, budget = selector_from_config(cat.selector_config(context.partition_key))
    pool, target = load_pool(raw_pool), load_pool(target_set, role="target")
    inputs, checkpoints = inputs_from_artifacts(pool, model_inputs["pool"], gradient_datastore,
                                                target_gradients, warmup_proxy, target)
    started = time.perf_counter()
    saved = select_and_save(selector, budget, inputs, pool=pool, target=target,
                            proxy_checkpoints=checkpoints, catalog=cat,
                            directory=artifacts.path("selections", "x").parent)
    seconds = time.perf_counter() - started
    if saved.lineage["config_hash"] != context.partition_key:
        context.log.warning(f"the selector now expands config {context.partition_key} to "
                            f"{saved.lineage['config_hash']} (new defaults); lineage keeps both")
    mix = cat.mix(saved.selection_id, "label").to_pandas()
    record = {"method": selector.name, "budget": budget, "seed": getattr(selector, "seed", 0),
              "k": len(saved.selection), "selection_id": saved.selection_id,
              "path": str(saved.path), "config_hash": context.partition_key}
    return dg.Output(record, metadata={
        "selector": selector.name, "budget": budget, "k": len(saved.selection),
        "n_pool": len(pool), "selection_id": saved.selection_id, "path": str(saved.path),
        "config": dg.MetadataValue.json(saved.lineage["config"]),
        "datastore_id": str(saved.lineage["datastore_id"]),
        # what the selector reports about its run (GTP: the target kind that ran, the input
        # guard thresholds used, rounds and each round's residual)
        "selection_info": dg.MetadataValue.json(saved.selection.info),
        "label_mix": md.table(mix, floatfmt=".3f"), "label_shares": md.share_plot(mix, "label"),
        "seconds": round(seconds, 3)})


@dg.multi_asset_check(
    specs=md.check_specs(scored_subset, SUBSET_CHECKS, blocking=True, deps=("raw_pool",),
                         partitions_def=SELECTOR_CONFIGS),
    ins={"scored_subset": dg.AssetIn("scored_subset"), "raw_pool": dg.AssetIn("raw_pool")},
    description="Blocking: a subset that fails any of these is not released in the same run.")
def scored_subset_checks(scored_subset: dict, raw_pool: str):
    yield from md.check_results("scored_subset", subset_outcomes([scored_subset], ids_of(raw_pool)))
