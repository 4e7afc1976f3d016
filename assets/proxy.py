"""warmup_proxy: a proxy model warmed up on a seeded fraction of the pool, with checkpoints."""

from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from assets import _metadata as md
from curation.evaluate import accuracy
from curation.pool import load_pool
from curation.proxy import ProxySpec, WarmupConfig
from curation.workflow import GradientSettings, cached_proxy, n_classes_of
from resources import ArtifactStore


class ProxyConfig(dg.Config):
    kind: Literal["linear", "mlp"] = Field(default="linear", description="Proxy kind: linear or mlp.")
    hidden: int = Field(default=128, description="Hidden units of the mlp proxy.")
    fraction: float = Field(default=0.05, gt=0, le=1, description="Fraction of the pool used for warm-up.")
    epochs: int = Field(default=4, description="Warm-up epochs.")
    checkpoints: int = Field(default=4, description="Checkpoints kept (evenly spaced epochs).")
    lr: float = Field(default=1e-2, description="Adam learning rate.")
    seed: int = Field(default=0, description="Seed of the warm-up sample and initialization.")

    def settings(self) -> GradientSettings:
        return GradientSettings(
            ProxySpec(self.kind, self.hidden),
            WarmupConfig(self.fraction, self.epochs, self.checkpoints, self.lr, seed=self.seed))


@dg.asset(kinds={"pytorch", "safetensors"}, group_name="proxy",
          description="Warm-up trained proxy; checkpoints (weights + Adam moments) as safetensors.")
def warmup_proxy(config: ProxyConfig, artifacts: ArtifactStore, raw_pool: str, target_set: str,
                 test_set: str, model_inputs: dict) -> dg.Output[str]:
    pool, target, test = (load_pool(p) for p in (raw_pool, target_set, test_set))
    inputs = np.load(model_inputs["pool"])
    proxy = cached_proxy(artifacts.work_dir, pool.content_hash, inputs, pool.labels,
                         n_classes_of(pool, target, test), config.settings())
    test_x = np.load(model_inputs["test"])
    rows = [{"epoch": c.epoch, "step": c.step, "sha256": c.sha256[:12],
             "test_accuracy": accuracy(proxy.load_model(c), test_x, test.labels)}
            for c in proxy.checkpoints]
    directory = str(proxy.checkpoints[0].model_path.parent)
    return dg.Output(directory, metadata={
        "checkpoints": md.table(pd.DataFrame(rows)), "kind": config.kind,
        "n_classes": proxy.n_classes, "directory": directory})
