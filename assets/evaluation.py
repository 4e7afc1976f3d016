"""subset_evaluation: fresh models trained on every subset and the full pool, scored on test."""

from typing import Literal

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
from pydantic import Field

from assets import _metadata as md
from curation.evaluate import EvalConfig, evaluate_subset
from curation.io import write_atomic, write_json
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
          description="Target test accuracy of a fresh model per subset, and of the full pool.")
def subset_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig,
                      artifacts: ArtifactStore, catalog: CatalogResource, raw_pool: str,
                      test_set: str, model_inputs: dict,
                      scored_subsets: list[dict]) -> dg.Output[list[dict]]:
    pool, test = load_pool(raw_pool), load_pool(test_set, role="test")
    pool_x, test_x = np.load(model_inputs["pool"]), np.load(model_inputs["test"])
    n_classes = n_classes_of(pool, test)
    eval_config = EvalConfig(ProxySpec(config.model), config.C, seeds=tuple(config.seeds),
                             use_weights=config.use_weights)
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
        result = evaluate_subset(pool_x[rows], pool.labels[rows], test_x, test.labels,
                                 n_classes, eval_config, sample_weights=weights)
        if subset["selection_id"]:
            catalog.catalog().record_evaluation(subset["selection_id"], "test",
                                                result.accuracies, list(config.seeds), len(rows))
        context.log.info(f"{subset['method']} {subset['budget']}: {result.mean:.4f}")
        records.append({"method": subset["method"], "budget": subset["budget"],
                        "seed": subset["seed"], "n_selected": len(rows),
                        "test_accuracy": result.mean})
    table_md = accuracy_table(records)
    report_dir = artifacts.path("reports", "demo", "x").parent
    write_json(report_dir / "results.json", records)
    write_atomic(report_dir / "summary.md", lambda p: p.write_text(table_md + "\n"))
    fig = accuracy_plot(records)
    metadata = {"accuracy": dg.MetadataValue.md(table_md), "plot": md.plot(fig),
                "results": str(report_dir / "results.json")}
    return dg.Output(records, metadata=metadata)
