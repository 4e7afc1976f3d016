"""subset_evaluation: fresh models trained on every subset and the full pool, scored on test."""

from typing import Literal

import dagster as dg
from pydantic import Field

from assets import _metadata as md
from curation.evaluate import EvalConfig, evaluate_subsets
from curation.io import write_atomic, write_json
from curation.pool import load_pool
from curation.proxies import EvalData, kind_of, load_trained_proxy
from curation.proxies.causal_lm import LMEvalConfig
from curation.proxies.classifier import ProxySpec
from curation.report import metric_plot, metric_table
from curation.selection import read_selection
from resources import ArtifactStore, CatalogResource


class EvaluationConfig(dg.Config):
    model: Literal["linear", "mlp"] = Field(default="linear", description="Evaluation model: linear or mlp.")
    C: float = Field(default=10.0, gt=0, description="Inverse L2 strength (scikit-learn convention).")
    seeds: list[int] = Field(default=[0], description="Training seeds per subset.")
    use_weights: bool = Field(default=False, description="Use selector weights as loss weights.")


@dg.asset(kinds={"pytorch", "duckdb"}, group_name="evaluation",
          description="Target test accuracy of a fresh model per subset, and of the full pool "
                      "(causal-lm proxy: held-out perplexity of the warmed-up LM fine-tuned on "
                      "each subset).")
def subset_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig,
                      artifacts: ArtifactStore, catalog: CatalogResource, raw_pool: str,
                      test_set: str, model_inputs: dict, warmup_proxy: str,
                      scored_subsets: list[dict]) -> dg.Output[list[dict]]:
    pool = load_pool(raw_pool, require_label=False)
    test = load_pool(test_set, role="test", require_label=False)
    proxy = load_trained_proxy(warmup_proxy)
    kind = kind_of(proxy)
    data = EvalData(pool, test, None, artifacts.work_dir,
                    inputs={"pool": model_inputs["pool"], "test": model_inputs["test"]})
    evaluation = EvalConfig(ProxySpec(config.model), config.C, seeds=tuple(config.seeds),
                            use_weights=config.use_weights)
    scorer = kind.scorer(data, proxy=proxy, evaluation=evaluation, lm_evaluation=LMEvalConfig())
    full, *scores = evaluate_subsets(scorer, [read_selection(s["path"], pool.ids)
                                              for s in scored_subsets], config.seeds,
                                     pool_size=len(pool))
    records = []
    for subset, score in zip([*scored_subsets, {"method": "full", "budget": 1.0, "seed": 0,
                                                "selection_id": None}], [*scores, full],
                             strict=True):
        # The catalog's evaluations table holds accuracies: other metrics live in the results.
        if subset["selection_id"] and kind.metric == "test_accuracy":
            catalog.catalog().record_evaluation(subset["selection_id"], "test", score.per_seed,
                                                list(config.seeds), score.n_train)
        context.log.info(f"{subset['method']} {subset['budget']}: {score.metrics}")
        records.append({"method": subset["method"], "budget": subset["budget"],
                        "seed": subset["seed"], "n_selected": score.n_train, **score.metrics})
    table_md = metric_table(records, kind.metric)
    report_dir = artifacts.path("reports", "demo", "x").parent
    write_json(report_dir / "results.json", records)
    write_atomic(report_dir / "summary.md", lambda p: p.write_text(table_md + "\n"))
    fig = metric_plot(records, kind.metric)
    metadata = {kind.metric_label: dg.MetadataValue.md(table_md),
                "plot": md.plot(fig), "results": str(report_dir / "results.json")}
    return dg.Output(records, metadata=metadata)
