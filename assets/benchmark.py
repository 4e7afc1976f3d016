"""benchmark_report: the selection-quality benchmark on the pipeline's splits, table and plot."""

import dagster as dg
from pydantic import Field, field_validator

from assets import _metadata as md
from assets._metadata import check_choices
from curation.benchmark import BenchmarkConfig, benchmark_id, run_benchmark, write_report
from curation.datastore import DatastoreSpec
from curation.evaluate import EvalConfig
from curation.pool import load_pool
from curation.proxy import ProxySpec, WarmupConfig
from curation.selectors import SELECTORS
from curation.workflow import GradientSettings
from resources import ArtifactStore


class BenchmarkReportConfig(dg.Config):
    methods: list[str] = Field(default=["random", "less", "el2n", "gtp"],
                               description="Selectors to compare.")
    budgets: list[float] = Field(default=[0.01, 0.05, 0.1], description="Budgets to compare.")
    seeds: list[int] = Field(default=[0, 1, 2], description="Whole-chain seeds.")
    proxy: str = Field(default="linear", description="Proxy kind: linear or mlp.")
    dim: int = Field(default=1024, gt=0, description="Projection dimension per checkpoint.")
    use_weights: bool = Field(default=False, description="Train on selector weights.")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        return check_choices(methods, tuple(SELECTORS))


@dg.asset(kinds={"pytorch"}, group_name="evaluation",
          description="Selector x budget x seed grid on the pipeline's splits: mean ± std table "
                      "and accuracy-vs-budget plot.")
def benchmark_report(config: BenchmarkReportConfig, artifacts: ArtifactStore, raw_pool: str,
                     target_set: str, test_set: str) -> dg.Output[dict]:
    pool, target, test = load_pool(raw_pool), load_pool(target_set), load_pool(test_set)
    grid = BenchmarkConfig(
        tuple(config.methods), tuple(config.budgets), tuple(config.seeds),
        GradientSettings(ProxySpec(config.proxy), WarmupConfig(), DatastoreSpec(dim=config.dim)),
        EvalConfig(seeds=(0,), use_weights=config.use_weights))
    records = run_benchmark(pool, test, target, grid, artifacts.work_dir, progress=False)
    out_dir = artifacts.path("benchmarks", benchmark_id(pool, target, test, grid), "x").parent
    report = write_report(records, out_dir)
    figure = md.plot_file(report["plot"])
    return dg.Output({k: str(v) for k, v in report.items() if k != "table"}, metadata={
        "accuracy": dg.MetadataValue.md(report["table"]), "plot": figure,
        "runs": len(records), "results": str(report["results"])})
