"""distilled_set[config]: the subset of one selector config distilled to a few examples per
class with expert soft labels (or trajectory-matched inputs), scored by fresh students on test.

Partitioned like ``scored_subset`` (dynamic partitions keyed by the selector config hash): it
takes the top-ranked members per class of that partition's subset. A random per-class choice
is the partition of a ``random`` selector config (or ``curation distill`` without --selection).
"""

import copy
import json

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from assets import _metadata as md
from assets._config import derived_config
from assets.subset import SELECTOR_CONFIGS
from curation.config import config_fields
from curation.distill import DistillConfig, ExpertConfig, MatchingConfig, StudentSpec, run_distill
from curation.lineage import config_hash
from curation.pool import load_pool
from resources import ArtifactStore, CatalogResource

# Top-level fields keep their names; fields of the nested configs are renamed after their part
# (``expert_epochs`` is ``ExpertConfig.epochs``, ``model`` is ``StudentSpec.kind``).
_TOP = ("per_class", "labels", "method", "temperature", "expert_epoch", "top_k", "expert_data",
        "seed")
_NESTED = {"model": (StudentSpec, "kind"), "width": (StudentSpec, "width"),
           "depth": (StudentSpec, "depth"), "expert_epochs": (ExpertConfig, "epochs"),
           "expert_lr": (ExpertConfig, "lr"), "iterations": (MatchingConfig, "iterations")}


def _renamed(cls: type, name: str) -> tuple:
    info = config_fields(cls, (name,))[name]
    return info.annotation, copy.copy(info)


class DistilledSetConfig(derived_config(
        "DistilledSetFields", (DistillConfig, _TOP),
        **{option: _renamed(cls, name) for option, (cls, name) in _NESTED.items()},
        eval_seeds=(list[int], Field(default=[0, 1, 2], min_length=1,
                                     description="Student training seeds.")))):
    """The distill fields of ``DistillConfig`` (and its model, expert and matching parts)."""

    def core(self) -> DistillConfig:
        values = self.model_dump()
        parts = {cls: {name: values[option] for option, (c, name) in _NESTED.items() if c is cls}
                 for cls in (StudentSpec, ExpertConfig, MatchingConfig)}
        return self.to_core(DistillConfig, model=StudentSpec(**parts[StudentSpec]),
                            expert=ExpertConfig(**parts[ExpertConfig]),
                            matching=MatchingConfig(**parts[MatchingConfig]))


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
