"""The selection chain in plain Python: inputs -> proxy -> gradient stores -> selector.

Used by the CLI and benchmarks; the Dagster assets call the same steps one per asset.
Intermediate artifacts live in a content-addressed work directory (keyed by the hash of
their inputs and config), so re-running with the same data and config reuses them.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from pydantic import Field

from curation.config import config
from curation.datastore import DatastoreSpec, GradientStore, build_datastore, open_datastore
from curation.errors import CurationError
from curation.lineage import config_hash
from curation.pool import Pool, n_classes_of
from curation.proxies import TrainedProxy, kind_of, unsupported_methods
from curation.proxies.causal_lm import LMSpec
from curation.proxies.classifier import Proxy, ProxySpec, WarmupConfig, cached_classifier
from curation.selection import select_with_lineage, split_labels
from curation.selectors import Selection, SelectionInputs, Selector

__all__ = ["GradientSettings", "cached_proxy", "cached_store", "n_classes_of", "proxy_inputs",
           "run_selection"]


@config("gradient settings")
class GradientSettings:
    """Proxy architecture (a classifier ``ProxySpec`` or a causal-LM ``LMSpec``), its
    warm-up, and how gradient features are stored."""

    proxy: ProxySpec | LMSpec = Field(default_factory=ProxySpec,
                                      description="The proxy's kind and architecture.")
    warmup: WarmupConfig = Field(default_factory=WarmupConfig, description="Its warm-up training.")
    datastore: DatastoreSpec = Field(default_factory=DatastoreSpec,
                                     description="How gradient features are computed and stored.")


DEFAULT_SETTINGS = GradientSettings()


def cached_proxy(work_dir: Path, pool_id: str, inputs: np.ndarray, labels: np.ndarray,
                 n_classes: int, settings: GradientSettings) -> Proxy:
    """Warm up a classifier proxy on the pool, or reuse the one already trained with the same
    config (``curation.proxies.classifier.cached_classifier``)."""
    return cached_classifier(work_dir, pool_id, inputs, labels, n_classes, settings.proxy,
                             settings.warmup)


def proxy_inputs(pool: Pool, target: Pool | None, work_dir: Path, settings: GradientSettings,
                 progress: bool = False) -> tuple[TrainedProxy, dict[str, tuple]]:
    """The proxy and each split's datastore inputs: ``{"pool": (x, y), "target": (x, y)}``,
    as the proxy's kind prepares them (see ``ProxyKind.prepare``)."""
    return kind_of(settings.proxy).prepare(work_dir, pool, target, settings, progress)


def cached_store(work_dir: Path, proxy: TrainedProxy, inputs: np.ndarray, labels: np.ndarray,
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
                  work_dir: str | Path, settings: GradientSettings = DEFAULT_SETTINGS,
                  progress: bool = False) -> tuple[Selection, dict]:
    """Select from ``pool`` with ``selector``; return the selection and its lineage."""
    work_dir = Path(work_dir)
    if "target" in selector.needs and target is None:
        raise CurationError(f"selector {selector.name!r} needs a target set (--target)")
    stores: dict[tuple[str, str], GradientStore] = {}
    proxy = None
    inputs = SelectionInputs(pool.ids)
    if {"gradients", "proxy"} & set(selector.needs):
        kind = kind_of(settings.proxy)
        if unsupported_methods(kind, [selector.name], {selector.name: selector}):
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
                                 functools.cache(lambda: (kind.predictions(proxy, pool_x),
                                                          pool.labels)),
                                 split_labels(pool, target), lambda: pool_x)
    return select_with_lineage(
        selector, inputs, budget, pool_id=pool.content_hash,
        target_id=target.content_hash if target is not None else None,
        proxy_checkpoints=[c.sha256 for c in proxy.checkpoints] if proxy else [])
