"""The Dagster code location: assets, resources and the demo job."""

import dagster as dg

from assets.benchmark import benchmark_report
from assets.data import splits
from assets.evaluation import subset_evaluation
from assets.gradients import gradient_datastore, target_gradients
from assets.inputs import model_inputs
from assets.proxy import warmup_proxy
from assets.selection import scored_subsets
from resources import ArtifactStore, CatalogResource

ALL_ASSETS = [splits, model_inputs, warmup_proxy, gradient_datastore, target_gradients,
              scored_subsets, subset_evaluation, benchmark_report]

demo_job = dg.define_asset_job(
    "demo_job", selection=dg.AssetSelection.all() - dg.AssetSelection.assets("benchmark_report"),
    description="The whole chain on the embedded demo data: splits to evaluation.",
)

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[demo_job],
    resources={"artifacts": ArtifactStore(), "catalog": CatalogResource()},
)
