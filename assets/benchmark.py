"""benchmark_report: the selection-quality benchmark on the pipeline's splits, table and plot."""

import dagster as dg
from pydantic import Field, field_validator

from assets import _metadata as md
from assets._metadata import check_choices
from curation.benchmark import BenchmarkConfig, benchmark_id, run_benchmark, write_report
from curation.config import choice, config_fields, default_of
from curation.datastore import DatastoreSpec
from curation.evaluate import EvalConfig
from curation.lm_bases import LM_BASES
from curation.pool import load_pool
from curation.proxies import PROXY_KINDS, proxy_kind
from curation.selectors import SELECTORS
from resources import ArtifactStore


class BenchmarkReportConfig(dg.Config):
    methods: list[str] = Field(default=["random", "less", "el2n", "gtp"],
                               description="Selectors to compare.")
    budgets: list[float] = Field(default=[0.01, 0.05, 0.1], description="Budgets to compare.")
    seeds: list[int] = Field(default=[0, 1, 2], description="Whole-chain seeds.")
    proxy: choice(PROXY_KINDS) = Field(default="linear", description=(
        "Proxy kind: linear or mlp (classifier heads, scored by test accuracy), or causal-lm "
        "(a small LM with LoRA adapters, scored by held-out perplexity; leave out el2n)."))
    dim: int = Field(default=default_of(DatastoreSpec, "dim"), gt=0,
                     description=config_fields(DatastoreSpec, ("dim",))["dim"].description)
    use_weights: bool = Field(default=False, description="Train on selector weights.")
    pretrain_docs: int = Field(default=4000, ge=0, description=(
        "causal-lm without lm_base: pre-train the base LM on this many 20 Newsgroups training "
        "documents outside the pool and target (0: random-init base)."))
    lm_base: str = Field(default="", description=(
        "causal-lm: a named base (smollm2-135m) or a local model directory (safetensors + "
            "tokenizer.json) to start from."))

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        return check_choices(methods, tuple(SELECTORS))


@dg.asset(kinds={"pytorch"}, group_name="evaluation",
          description="Selector x budget x seed grid on the pipeline's splits: mean ± std table "
                      "and accuracy- (or, for a causal-lm proxy, perplexity-) vs-budget plot.")
def benchmark_report(config: BenchmarkReportConfig, artifacts: ArtifactStore, raw_pool: str,
                     target_set: str, test_set: str) -> dg.Output[dict]:
    pool, target, test = load_pool(raw_pool), load_pool(target_set), load_pool(test_set)
    settings = proxy_kind(config.proxy).settings(
        artifacts.work_dir, pool, target, dim=config.dim, base=config.lm_base or None,
        pretrain_docs=0 if config.lm_base else config.pretrain_docs,
        train_base=None if config.lm_base in LM_BASES else True)
    grid = BenchmarkConfig(tuple(config.methods), tuple(config.budgets), tuple(config.seeds),
                           settings, EvalConfig(seeds=(0,), use_weights=config.use_weights))
    records = run_benchmark(pool, test, target, grid, artifacts.work_dir, progress=False)
    out_dir = artifacts.path("benchmarks", benchmark_id(pool, target, test, grid), "x").parent
    report = write_report(records, out_dir, metric=grid.metric)
    figure = md.plot_file(report["plot"])
    label = grid.kind.metric_label
    return dg.Output({k: str(v) for k, v in report.items() if k != "table"}, metadata={
        label: dg.MetadataValue.md(report["table"]), "plot": figure,
        "runs": len(records), "results": str(report["results"])})
