"""The per-config code location: ``scored_subset[config]``, ``dataset_release[config]`` and
``distilled_set[config]``.

All are partitioned by ``selector_config`` (dynamic partitions keyed by the canonical config
hash). Their inputs come from the shared location (``pipelines.definitions``): they are
declared here as external assets and loaded through the same IO manager storage in
``$DAGSTER_HOME``. A sensor turns every config registered in the catalog into a partition and
materializes its subset; releases are cut on demand with ``release_job`` and a version.
"""

import dagster as dg

from assets.distill import distilled_set
from assets.release import dataset_release
from assets.subset import SELECTOR_CONFIGS, UPSTREAM, scored_subset, scored_subset_checks
from resources import ArtifactStore, CatalogResource, DvcRepository

MAX_RUNS_PER_TICK = 4

subset_job = dg.define_asset_job(
    "subset_job", selection=dg.AssetSelection.assets(scored_subset),
    partitions_def=SELECTOR_CONFIGS,
    description="Materialize (and check) the subset of one selector config.")

release_job = dg.define_asset_job(
    "release_job", selection=dg.AssetSelection.assets(scored_subset, dataset_release),
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


defs = dg.Definitions(
    assets=[*(dg.AssetSpec(key, group_name=group) for key, group in UPSTREAM.items()),
            dg.AssetSpec("test_set", group_name="data"), scored_subset, dataset_release,
            distilled_set],
    asset_checks=[scored_subset_checks],
    jobs=[subset_job, release_job],
    sensors=[new_selector_configs],
    resources={"artifacts": ArtifactStore(), "catalog": CatalogResource(), "dvc": DvcRepository()},
)
