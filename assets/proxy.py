"""warmup_proxy: a proxy model warmed up on a seeded fraction of the pool, with checkpoints."""

from dataclasses import replace
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from assets import _metadata as md
from curation.evaluate import accuracy
from curation.lm import LM_KIND, LM_WARMUP, loss_scores, token_loss
from curation.pool import load_pool
from curation.proxy import ProxySpec, WarmupConfig
from curation.workflow import (
    GradientSettings,
    cached_lm_proxy,
    cached_proxy,
    lm_settings,
    n_classes_of,
)
from resources import ArtifactStore


class ProxyConfig(dg.Config):
    kind: Literal["linear", "mlp", "causal-lm"] = Field(
        default="linear", description="Proxy kind: linear or mlp (classifier heads over the "
                                      "model inputs), or causal-lm (a small LM with LoRA adapters "
                                      "over the text; leave el2n out of the selectors).")
    hidden: int = Field(default=128, description="Hidden units of the mlp proxy.")
    fraction: float | None = Field(default=None, gt=0, le=1, description=(
        "Fraction of the pool used for warm-up [default: 0.05; 0.25 for causal-lm]."))
    epochs: int = Field(default=4, description="Warm-up epochs.")
    checkpoints: int = Field(default=4, description="Checkpoints kept (evenly spaced epochs).")
    lr: float | None = Field(default=None, gt=0, description=(
        "Adam learning rate [default: 1e-2; 2e-3 for causal-lm]."))
    seed: int = Field(default=0, description="Seed of the warm-up sample and initialization.")
    lm_base: str = Field(default="", description=(
        "causal-lm: a local model directory (safetensors + tokenizer.json) to start from."))
    pretrain_docs: int = Field(default=0, ge=0, description=(
        "causal-lm without lm_base: pre-train the base on this many 20 Newsgroups training "
        "documents outside the pool and target first (0: random-init base)."))

    def warmup(self) -> WarmupConfig:
        default = LM_WARMUP if self.kind == LM_KIND else WarmupConfig()
        return replace(default, fraction=self.fraction or default.fraction, epochs=self.epochs,
                       checkpoints=self.checkpoints, lr=self.lr or default.lr, seed=self.seed)

    def settings(self) -> GradientSettings:
        """Settings of a classifier proxy (a causal-lm one needs the splits: see the asset)."""
        return GradientSettings(ProxySpec(self.kind, self.hidden), self.warmup())


@dg.asset(kinds={"pytorch", "safetensors"}, group_name="proxy",
          description="Warm-up trained proxy; checkpoints (weights + Adam moments) as safetensors.")
def warmup_proxy(config: ProxyConfig, artifacts: ArtifactStore, raw_pool: str, target_set: str,
                 test_set: str, model_inputs: dict) -> dg.Output[str]:
    if config.kind == LM_KIND:
        return _warmup_lm_proxy(config, artifacts, raw_pool, target_set, test_set)
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


def _warmup_lm_proxy(config: ProxyConfig, artifacts: ArtifactStore, raw_pool: str,
                     target_set: str, test_set: str) -> dg.Output[str]:
    pool, target, test = (load_pool(p, require_label=False)
                          for p in (raw_pool, target_set, test_set))
    settings = lm_settings(artifacts.work_dir, pool, target, base=config.lm_base or None,
                           pretrain_docs=0 if config.lm_base else config.pretrain_docs,
                           warmup=config.warmup())
    proxy = cached_lm_proxy(artifacts.work_dir, pool, settings)
    test_ids, test_targets = proxy.encode(test)
    rows = []
    for c in proxy.checkpoints:
        loss = token_loss(proxy.load_model(c), test_ids, test_targets)
        rows.append({"epoch": c.epoch, "step": c.step, "sha256": c.sha256[:12],
                     **loss_scores(loss)})
    directory = str(proxy.directory)
    return dg.Output(directory, metadata={
        "checkpoints": md.table(pd.DataFrame(rows)), "kind": config.kind,
        "vocab_size": proxy.vocab_size, "base": config.lm_base or (
            f"pre-trained here on {config.pretrain_docs} documents" if config.pretrain_docs
            else "random init"), "directory": directory})
