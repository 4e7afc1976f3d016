"""The code location: one asset graph, its checks, jobs, schedule and sensors.

One location, so the UI shows one graph with every edge (pool to release) and one lineage view.
The partitioned assets (``scored_subset[config]`` and what hangs off it) live beside the
unpartitioned chain; the jobs below select by group, so ``demo_job`` and ``refresh_job`` need no
partition key. Asset outputs go through the explicit ``io_manager`` resource (files under
``$DAGSTER_HOME/storage``).
"""

import dagster as dg

from assets.benchmark import benchmark_report
from assets.checks import CHECKS
from assets.data import splits
from assets.dedup import deduped_pool
from assets.distill import distilled_set
from assets.evaluation import subset_evaluation
from assets.gradients import gradient_datastore, target_gradients
from assets.inputs import model_inputs
from assets.proxy import warmup_proxy
from assets.release import dataset_release
from assets.selection import scored_subsets
from assets.subset import scored_subset, scored_subset_checks
from pipelines.per_config import PER_CONFIG_GROUPS, new_selector_configs, release_job, subset_job
from pipelines.refresh import new_pool_files, nightly_refresh, refresh_job
from resources import ArtifactStore, CatalogResource, DvcRepository, PoolDropbox

UNPARTITIONED_ASSETS = [splits, model_inputs, deduped_pool, warmup_proxy, gradient_datastore,
                        target_gradients, scored_subsets, subset_evaluation, benchmark_report]
PER_CONFIG_ASSETS = [scored_subset, dataset_release, distilled_set]
ALL_ASSETS = UNPARTITIONED_ASSETS + PER_CONFIG_ASSETS

demo_job = dg.define_asset_job(
    "demo_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets("benchmark_report")
    - dg.AssetSelection.groups(*PER_CONFIG_GROUPS),
    description="The whole chain on the embedded demo data: splits to evaluation.",
)

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=[*CHECKS, scored_subset_checks],
    jobs=[demo_job, refresh_job, subset_job, release_job],
    schedules=[nightly_refresh],
    sensors=[new_pool_files, new_selector_configs],
    resources={"artifacts": ArtifactStore(), "catalog": CatalogResource(),
               "pool_dropbox": PoolDropbox(), "dvc": DvcRepository(),
               "io_manager": dg.FilesystemIOManager()},
)
