"""The shared code location: the unpartitioned graph, its checks, schedule and sensor.

The per-config graph (``scored_subset[config]`` and ``dataset_release``, dynamically
partitioned) is a second code location, ``pipelines.subsets`` (see DESIGN.md): keeping it
out of this one is what lets ``dagster asset materialize -m pipelines.definitions
--select '*'`` run without a partition key.
"""

import dagster as dg

from assets.benchmark import benchmark_report
from assets.checks import CHECKS
from assets.data import splits
from assets.evaluation import subset_evaluation
from assets.gradients import gradient_datastore, target_gradients
from assets.inputs import model_inputs
from assets.proxy import warmup_proxy
from assets.selection import scored_subsets
from pipelines.operations import new_pool_files, nightly_refresh, refresh_job
from resources import ArtifactStore, CatalogResource, PoolDropbox

ALL_ASSETS = [splits, model_inputs, warmup_proxy, gradient_datastore, target_gradients,
              scored_subsets, subset_evaluation, benchmark_report]
ALL_CHECKS = CHECKS

demo_job = dg.define_asset_job(
    "demo_job", selection=dg.AssetSelection.all() - dg.AssetSelection.assets("benchmark_report"),
    description="The whole chain on the embedded demo data: splits to evaluation.",
)

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=[demo_job, refresh_job],
    schedules=[nightly_refresh],
    sensors=[new_pool_files],
    resources={"artifacts": ArtifactStore(), "catalog": CatalogResource(),
               "pool_dropbox": PoolDropbox()},
)
