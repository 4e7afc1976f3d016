"""distilled_set[config]: the subset of one selector config distilled to a few examples per
class with expert soft labels (or trajectory-matched inputs), scored by fresh students on test.

Partitioned like ``scored_subset`` (dynamic partitions keyed by the selector config hash): it
takes the top-ranked members per class of that partition's subset. A random per-class choice
is the partition of a ``random`` selector config (or ``curation distill`` without --selection).
"""

import json
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from assets import _metadata as md
from assets.subset import SELECTOR_CONFIGS
from curation.distill import DistillConfig, ExpertConfig, MatchingConfig, run_distill
from curation.lineage import config_hash
from curation.pool import load_pool
from curation.proxies.classifier import ProxySpec
from resources import ArtifactStore, CatalogResource


class DistilledSetConfig(dg.Config):
    per_class: int = Field(default=10, gt=0, description="Distilled examples per class.")
    labels: Literal["soft", "hard"] = Field(default="soft", description="Expert soft labels or one-hot.")
    method: Literal["real", "tm"] = Field(default="real",
                                          description="real examples, or tm (trajectory matching).")
    temperature: float = Field(default=4.0, gt=0, description="Soft-label temperature.")
    expert_epoch: int | None = Field(default=None,
                                     description="Expert epoch of the soft labels; unset: the last.")
    expert_epochs: int = Field(default=10, gt=0, description="Epochs of the expert trajectory.")
    expert_lr: float = Field(default=1e-3, gt=0, description="Adam learning rate of the experts.")
    top_k: int | None = Field(default=None, description="Keep the k largest soft-label entries per row.")
    expert_data: Literal["pool", "selection"] = Field(default="pool",
                                                      description="Experts train on the pool or the subset.")
    model: Literal["linear", "mlp"] = Field(default="linear", description="Expert and student model.")
    iterations: int = Field(default=200, gt=0, description="Trajectory-matching iterations.")
    seed: int = Field(default=0, description="Seed of the choice, the experts and matching.")
    eval_seeds: list[int] = Field(default=[0, 1, 2], min_length=1, description="Student training seeds.")

    def core(self) -> DistillConfig:
        return DistillConfig(
            per_class=self.per_class, labels=self.labels, method=self.method,
            temperature=self.temperature, expert_epoch=self.expert_epoch, top_k=self.top_k,
            expert_data=self.expert_data, model=ProxySpec(self.model),
            expert=ExpertConfig(epochs=self.expert_epochs, lr=self.expert_lr),
            matching=MatchingConfig(iterations=self.iterations), seed=self.seed)


@dg.asset(partitions_def=SELECTOR_CONFIGS, kinds={"pytorch", "parquet"}, group_name="subsets",
          description="The subset distilled to a few examples per class (id, features, label, "
                      "float16 soft_label) and its test accuracy over student seeds; recorded "
                      "in the catalog, so `curation release create ID --kind distilled` can "
                      "release it.")
def distilled_set(context: dg.AssetExecutionContext, config: DistilledSetConfig,
                  artifacts: ArtifactStore, catalog: CatalogResource, raw_pool: str,
                  test_set: str, model_inputs: dict, scored_subset: dict) -> dg.Output[dict]:
    pool, test = load_pool(raw_pool), load_pool(test_set, role="test")
    key = config_hash({"pool": pool.content_hash, "test": test.content_hash,
                       "subset": context.partition_key, "config": config.model_dump()})
    out = run_distill(pool, test, config.core(), artifacts.path("distilled", key, "x").parent,
                      artifacts.work_dir, selection=scored_subset["path"],
                      eval_seeds=config.eval_seeds, inputs=np.load(model_inputs["pool"]),
                      test_inputs=np.load(model_inputs["test"]))
    catalog.catalog().record_distilled_set(key, out.distilled, json.loads(out.lineage.read_text()),
                                           selection_id=scored_subset["selection_id"])
    storage = {k: out.storage[k] for k in ("label_bytes", "input_bytes", "label_bytes_raw",
                                           "input_bytes_raw")}
    metadata = {"test_accuracy_mean": out.result.mean, "test_accuracy_std": out.result.std,
                "rows": out.size, "path": str(out.distilled), "distilled_id": key,
                "selection_id": scored_subset["selection_id"],
                "storage": md.table(pd.DataFrame([storage])),
                "accuracies": md.table(pd.DataFrame({"seed": config.eval_seeds,
                                                     "test_accuracy": out.result.accuracies}))}
    if "teacher_test_accuracy" in out.record:
        metadata["teacher_test_accuracy"] = out.record["teacher_test_accuracy"]
    if out.grid is not None:
        metadata["grid"] = md.plot_file(out.grid)
    return dg.Output({"distilled_id": key, "distilled": str(out.distilled),
                      "evaluation": str(out.evaluation),
                      "lineage": str(out.lineage)}, metadata=metadata)
