"""subset_evaluation: fresh models trained on every subset and the full pool, scored on test."""

from typing import Literal

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
from pydantic import Field

from assets import _metadata as md
from curation.evaluate import EvalConfig, evaluate_subset
from curation.io import write_atomic, write_json
from curation.lm import (
    LMEvalConfig,
    LMProxy,
    finetune_perplexity,
    load_trained_proxy,
    loss_scores,
)
from curation.pool import load_pool
from curation.proxy import ProxySpec
from curation.report import accuracy_plot, accuracy_table
from curation.workflow import n_classes_of
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
    language_model = isinstance(proxy, LMProxy)
    score = (_perplexity_scorer(proxy, pool, test, config) if language_model
             else _accuracy_scorer(pool, test, model_inputs, config))
    position = {i: n for n, i in enumerate(pool.ids)}
    records = []
    for subset in [*scored_subsets, {"method": "full", "budget": 1.0, "seed": 0,
                                     "selection_id": None, "path": None}]:
        if subset["path"] is None:
            rows, weights = np.arange(len(pool)), None
        else:
            table = pq.read_table(subset["path"])
            rows = np.array([position[i] for i in table.column("id").to_pylist()])
            weights = table.column("weight").to_numpy()
        metrics, accuracies = score(rows, weights)
        if subset["selection_id"] and accuracies is not None:
            catalog.catalog().record_evaluation(subset["selection_id"], "test", accuracies,
                                                list(config.seeds), len(rows))
        context.log.info(f"{subset['method']} {subset['budget']}: {metrics}")
        records.append({"method": subset["method"], "budget": subset["budget"],
                        "seed": subset["seed"], "n_selected": len(rows), **metrics})
    metric = "test_perplexity" if language_model else "test_accuracy"
    table_md = accuracy_table(records, metric)
    report_dir = artifacts.path("reports", "demo", "x").parent
    write_json(report_dir / "results.json", records)
    write_atomic(report_dir / "summary.md", lambda p: p.write_text(table_md + "\n"))
    fig = accuracy_plot(records, metric)
    metadata = {"perplexity" if language_model else "accuracy": dg.MetadataValue.md(table_md),
                "plot": md.plot(fig), "results": str(report_dir / "results.json")}
    return dg.Output(records, metadata=metadata)


def _accuracy_scorer(pool, test, model_inputs: dict, config: EvaluationConfig):
    """Fresh classifiers on the subset's inputs; returns (metrics, per-seed accuracies)."""
    pool_x, test_x = np.load(model_inputs["pool"]), np.load(model_inputs["test"])
    n_classes = n_classes_of(pool, test)
    eval_config = EvalConfig(ProxySpec(config.model), config.C, seeds=tuple(config.seeds),
                             use_weights=config.use_weights)

    def score(rows: np.ndarray, weights: np.ndarray | None):
        result = evaluate_subset(pool_x[rows], pool.labels[rows], test_x, test.labels,
                                 n_classes, eval_config, sample_weights=weights)
        return {"test_accuracy": result.mean}, result.accuracies

    return score


def _perplexity_scorer(proxy, pool, test, config: EvaluationConfig):
    """The warmed-up LM fine-tuned on the subset, per seed; (mean metrics, None): the catalog's
    evaluations table holds accuracies, so LM scores live in the asset's results only."""
    (ids, targets), (test_ids, test_targets) = proxy.encode(pool), proxy.encode(test)

    def score(rows: np.ndarray, weights: np.ndarray | None):
        runs = [finetune_perplexity(proxy, ids[rows], targets[rows], test_ids, test_targets,
                                    LMEvalConfig(), seed,
                                    weights if config.use_weights else None)
                for seed in config.seeds]
        loss = float(np.mean([r["test_loss"] for r in runs]))
        return loss_scores(loss), None

    return score
