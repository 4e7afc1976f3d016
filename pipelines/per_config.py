"""The per-config part of the graph: jobs and the sensor for ``scored_subset[config]``,
``dataset_release[config]`` and ``distilled_set[config]``.

These assets are partitioned by ``selector_config`` (dynamic partitions keyed by the canonical
config hash). A sensor turns every config registered in the catalog into a partition and
materializes its subset; releases are cut on demand with ``release_job`` and a version.
"""

import dagster as dg

from assets.subset import SELECTOR_CONFIGS, scored_subset
from resources import CatalogResource

MAX_RUNS_PER_TICK = 4

# The partitioned assets, by group: kept out of the unpartitioned jobs (which have no key).
PER_CONFIG_GROUPS = ("subsets", "releases")

subset_job = dg.define_asset_job(
    "subset_job", selection=dg.AssetSelection.assets(scored_subset),
    partitions_def=SELECTOR_CONFIGS,
    description="Materialize (and check) the subset of one selector config.")

release_job = dg.define_asset_job(
    "release_job", selection=dg.AssetSelection.assets(scored_subset, "dataset_release"),
    partitions_def=SELECTOR_CONFIGS,
    description="Re-check a config's subset and release it as a DVC-versioned dataset; "
                "the blocking checks on scored_subset stop a bad subset from being released. "
                "Needs ops.dataset_release.config.version.")


@dg.sensor(job=subset_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds a partition for every selector config registered in the catalog "
                       f"and materializes its subset (at most {MAX_RUNS_PER_TICK} per tick).")
def new_selector_configs(context: dg.SensorEvaluationContext, catalog: CatalogResource):
    known = set(context.instance.get_dynamic_partitions(SELECTOR_CONFIGS.name))
    new = [c["config_hash"] for c in catalog.catalog().selector_configs()
           if c["config_hash"] not in known][:MAX_RUNS_PER_TICK]
    if not new:
        return dg.SkipReason(f"no new selector configs in {catalog.path}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=key) for key in new],
        dynamic_partitions_requests=[SELECTOR_CONFIGS.build_add_request(new)])
