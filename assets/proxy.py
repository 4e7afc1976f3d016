"""warmup_proxy: a proxy model warmed up on a seeded fraction of the pool, with checkpoints."""

from dataclasses import replace

import dagster as dg
import pandas as pd
from pydantic import Field

from assets import _metadata as md
from assets._config import derived_config
from curation.config import choice
from curation.pool import load_pool, n_classes_of
from curation.proxies import PROXY_KINDS, proxy_kind
from curation.proxies.classifier import ProxySpec, WarmupConfig
from resources import ArtifactStore


class ProxyConfig(derived_config(
        "ProxyFields", (ProxySpec, ("hidden",)), (WarmupConfig, ("epochs", "checkpoints", "seed")),
        kind=(choice(PROXY_KINDS), Field(
            default="linear", description="Proxy kind: linear or mlp (classifier heads over the "
            "model inputs), or causal-lm (a small LM with LoRA adapters over the text; leave "
            "el2n out of the selectors).")),
        # Asset-only: their defaults depend on the kind (its default warm-up).
        fraction=(float | None, Field(default=None, gt=0, le=1, description=(
            "Fraction of the pool used for warm-up [default: 0.05; 0.25 for causal-lm]."))),
        lr=(float | None, Field(default=None, gt=0, description=(
            "Adam learning rate [default: 1e-2; 2e-3 for causal-lm]."))),
        lm_base=(str, Field(default="", description=(
            "causal-lm: a named base (smollm2-135m) or a local model directory (safetensors + "
            "tokenizer.json) to start from."))),
        pretrain_docs=(int, Field(default=0, ge=0, description=(
            "causal-lm without lm_base: pre-train the base on this many 20 Newsgroups training "
            "documents outside the pool and target first (0: random-init base)."))))):
    """The proxy spec and warm-up fields of ``ProxySpec`` / ``WarmupConfig``, plus the kind."""

    def warmup(self) -> WarmupConfig:
        default = proxy_kind(self.kind).default_warmup
        return replace(default, fraction=self.fraction or default.fraction, epochs=self.epochs,
                       checkpoints=self.checkpoints, lr=self.lr or default.lr, seed=self.seed)


@dg.asset(kinds={"pytorch", "safetensors"}, group_name="proxy",
          description="Warm-up trained proxy; checkpoints (weights + Adam moments) as safetensors.")
def warmup_proxy(config: ProxyConfig, artifacts: ArtifactStore, raw_pool: str, target_set: str,
                 test_set: str, model_inputs: dict) -> dg.Output[str]:
    kind = proxy_kind(config.kind)
    pool, target, test = (load_pool(p, require_label=kind.needs_labels)
                          for p in (raw_pool, target_set, test_set))
    settings = kind.settings(artifacts.work_dir, pool, target, spec_options={"hidden": config.hidden},
                             warmup=config.warmup(), base=config.lm_base or None,
                             pretrain_docs=0 if config.lm_base else config.pretrain_docs)
    # Classes of every split, so the head covers a class only the target or test set holds.
    classes = n_classes_of(pool, target, test) if kind.needs_labels else None
    proxy, _ = kind.prepare(artifacts.work_dir, pool, None, settings,
                            inputs={"pool": model_inputs["pool"]}, n_classes=classes)
    rows = kind.checkpoint_report(proxy, test, model_inputs.get("test"))
    directory = str(proxy.checkpoints[0].model_path.parent)
    metadata = {"checkpoints": md.table(pd.DataFrame(rows)), "kind": config.kind,
                **kind.describe(proxy), "directory": directory}
    if kind.takes_base:
        metadata["base"] = config.lm_base or (
            f"pre-trained here on {config.pretrain_docs} documents" if config.pretrain_docs
            else "random init")
    return dg.Output(directory, metadata=metadata)
