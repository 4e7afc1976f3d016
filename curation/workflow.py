"""The selection chain in plain Python: inputs -> proxy -> gradient stores -> selector.

Used by the CLI and benchmarks; the Dagster assets call the same steps one per asset.
Intermediate artifacts live in a content-addressed work directory (keyed by the hash of
their inputs and config), so re-running with the same data and config reuses them.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from curation.datastore import DatastoreSpec, GradientStore, build_datastore, open_datastore
from curation.demo_data import pretraining_corpus
from curation.embed import input_matrix
from curation.errors import CurationError
from curation.lineage import config_hash
from curation.lm import LM_GRADIENT_BATCH, LM_WARMUP, LMProxy, LMSpec, cached_base, load_lm_proxy, warmup_lm
from curation.pool import Pool
from curation.proxy import (
    Proxy,
    ProxySpec,
    WarmupConfig,
    load_proxy,
    predict_probabilities,
    warmup,
)
from curation.selection import select_with_lineage
from curation.selectors import Selection, SelectionInputs, Selector


@dataclass(frozen=True)
class GradientSettings:
    """Proxy architecture (a classifier ``ProxySpec`` or a causal-LM ``LMSpec``), its
    warm-up, and how gradient features are stored."""

    proxy: ProxySpec | LMSpec = field(default_factory=ProxySpec)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    datastore: DatastoreSpec = field(default_factory=DatastoreSpec)


def n_classes_of(*pools: Pool) -> int:
    return int(max(p.labels.max() for p in pools if p.has_labels)) + 1


def cached_proxy(work_dir: Path, pool_id: str, inputs: np.ndarray, labels: np.ndarray,
                 n_classes: int, settings: GradientSettings) -> Proxy:
    """Warm up a proxy on the pool, or reuse the one already trained with the same config."""
    key = config_hash({"pool_id": pool_id, "n_classes": n_classes,
                       "proxy": asdict(settings.proxy), "warmup": asdict(settings.warmup)})
    directory = work_dir / "proxies" / key
    if (directory / "proxy.json").exists():
        return load_proxy(directory)
    return warmup(inputs, labels, n_classes, directory, settings.proxy, settings.warmup)


def cached_lm_proxy(work_dir: Path, pool: Pool, settings: GradientSettings,
                    progress: bool = False) -> LMProxy:
    """Warm up a causal-LM proxy (tokenizer included) on the pool, or reuse the same one."""
    key = config_hash({"pool_id": pool.content_hash, "proxy": asdict(settings.proxy),
                       "warmup": asdict(settings.warmup)})
    directory = work_dir / "proxies" / key
    if (directory / "proxy.json").exists():
        return load_lm_proxy(directory)
    return warmup_lm(pool, directory, settings.proxy, settings.warmup, progress)


def proxy_inputs(pool: Pool, target: Pool | None, work_dir: Path, settings: GradientSettings,
                 progress: bool = False) -> tuple[Proxy | LMProxy, dict[str, tuple]]:
    """The proxy and each split's datastore inputs: ``{"pool": (x, y), "target": (x, y)}``.

    Classifier proxies read embeddings (or features) and labels; a causal-LM proxy reads
    token ids and next-token targets from its own tokenizer.
    """
    if isinstance(settings.proxy, LMSpec):
        proxy = cached_lm_proxy(work_dir, pool, settings, progress)
        splits = {"pool": proxy.encode(pool)}
        if target is not None:
            splits["target"] = proxy.encode(target)
        return proxy, splits
    cache = work_dir / "embeddings"
    pool_x = input_matrix(pool, cache, progress)
    proxy = cached_proxy(work_dir, pool.content_hash, pool_x, pool.labels,
                         n_classes_of(*([pool] if target is None else [pool, target])), settings)
    splits = {"pool": (pool_x, pool.labels)}
    if target is not None:
        target_x = input_matrix(target, cache, progress)
        if pool_x.shape[1] != target_x.shape[1]:
            raise CurationError(
                f"target inputs have {target_x.shape[1]} dims but the pool has {pool_x.shape[1]}"
            )
        splits["target"] = (target_x, target.labels)
    return proxy, splits


def lm_settings(work_dir: Path, pool: Pool, target: Pool | None, *, checkpoints: int = 3,
                dim: int = 1024, seed: int = 0, base: str | Path | None = None,
                pretrain_docs: int = 0, train_base: bool | None = None,
                warmup: WarmupConfig | None = None, progress: bool = False
                ) -> GradientSettings:
    """Settings of a causal-LM proxy: on ``base`` (a local model directory), else on a base
    pre-trained here on ``pretrain_docs`` 20 Newsgroups documents outside the pool and target
    (cached), else (``pretrain_docs=0``) on a random-init base. ``warmup`` replaces the default
    LM warm-up (``LM_WARMUP`` with ``checkpoints`` and ``seed``)."""
    if base is None and pretrain_docs > 0:
        exclude = [*pool.ids, *(target.ids if target is not None else [])]
        base = cached_base(work_dir, pretraining_corpus(pretrain_docs, exclude), LMSpec(),
                           progress=progress)
    spec = LMSpec(base_path=str(base or ""), train_base=train_base)
    warmup = warmup or replace(LM_WARMUP, epochs=max(3, checkpoints), checkpoints=checkpoints,
                               seed=seed)
    datastore = DatastoreSpec(dim=dim, seed=seed, batch_size=LM_GRADIENT_BATCH)
    return GradientSettings(spec, warmup, datastore)


def cached_store(work_dir: Path, proxy: Proxy | LMProxy, inputs: np.ndarray, labels: np.ndarray,
                 ids: np.ndarray, data_id: str, spec: DatastoreSpec,
                 progress: bool = False, scheduler: str | None = None) -> GradientStore:
    """Build a gradient store, or open the one already built from the same inputs.

    ``scheduler`` (a Dask address) only says where shards are computed; it is not part of
    the key because the bytes are the same either way.
    """
    key = config_hash({"data_id": data_id, "spec": asdict(spec),
                       "proxy": [c.sha256 for c in proxy.checkpoints]})
    directory = work_dir / "datastores" / key
    if (directory / "manifest.json").exists():
        return open_datastore(directory)
    return build_datastore(proxy, inputs, labels, ids, directory, spec, data_id, progress,
                           scheduler)


def run_selection(pool: Pool, target: Pool | None, selector: Selector, budget: float,
                  work_dir: str | Path, settings: GradientSettings = GradientSettings(),
                  progress: bool = False) -> tuple[Selection, dict]:
    """Select from ``pool`` with ``selector``; return the selection and its lineage."""
    work_dir = Path(work_dir)
    if "target" in selector.needs and target is None:
        raise CurationError(f"selector {selector.name!r} needs a target set (--target)")
    stores: dict[tuple[str, str], GradientStore] = {}
    proxy = None
    inputs = SelectionInputs(pool.ids)
    if {"gradients", "proxy"} & set(selector.needs):
        if "proxy" in selector.needs and isinstance(settings.proxy, LMSpec):
            raise CurationError(f"selector {selector.name!r} needs class predictions, which a "
                                f"{settings.proxy.kind} proxy does not make; use gtp, less or "
                                "random")
        proxy, splits = proxy_inputs(pool, target, work_dir, settings, progress)
        data = {"pool": pool, "target": target}

        def store(split: str, kind: str) -> GradientStore:
            if (split, kind) not in stores:
                x, y = splits[split]
                stores[split, kind] = cached_store(
                    work_dir, proxy, x, y, data[split].ids, data[split].content_hash,
                    replace(settings.datastore, kind=kind), progress)
            return stores[split, kind]

        pool_x = splits["pool"][0]
        inputs = SelectionInputs(pool.ids, lambda kind: store("pool", kind),
                                 lambda kind: store("target", kind),
                                 functools.cache(lambda: (predict_probabilities(proxy, pool_x),
                                                          pool.labels)))
    return select_with_lineage(
        selector, inputs, budget, pool_id=pool.content_hash,
        target_id=target.content_hash if target is not None else None,
        proxy_checkpoints=[c.sha256 for c in proxy.checkpoints] if proxy else [])
