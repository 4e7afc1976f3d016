"""Proxy kinds, registered by name: the ONE place that knows which kinds exist.

``PROXY_KINDS`` maps a name (the ``kind`` of a spec, of a proxy manifest, of ``--proxy``) to its
kind object (``curation.proxies.base.ProxyKind``), as ``curation.selectors.SELECTORS`` does for
selectors. A new model family is one new module whose kind object is added here; nothing else
branches on kinds.
"""

from __future__ import annotations

from pathlib import Path

from curation.errors import CurationError
from curation.proxies.base import (
    Checkpoint,
    EvalData,
    ProxyKind,
    Scorer,
    SubsetScore,
    TrainedProxy,
    checkpoint_epochs,
    read_manifest,
    read_proxy_record,
    save_checkpoint,
)
from curation.proxies.causal_lm import CAUSAL_LM
from curation.proxies.classifier import LINEAR, MLP

PROXY_KINDS: dict[str, ProxyKind] = {kind.name: kind for kind in (LINEAR, MLP, CAUSAL_LM)}

__all__ = ["PROXY_KINDS", "Checkpoint", "EvalData", "ProxyKind", "Scorer", "SubsetScore",
           "TrainedProxy", "checkpoint_epochs", "kind_of", "load_trained_proxy", "proxy_help",
           "proxy_kind", "read_manifest", "read_proxy_record", "save_checkpoint",
           "unsupported_methods"]


def proxy_kind(name: str) -> ProxyKind:
    """The kind registered as ``name``; an unknown name fails listing the known ones."""
    if name not in PROXY_KINDS:
        raise CurationError(f"unknown proxy kind {name!r}; expected one of {list(PROXY_KINDS)}")
    return PROXY_KINDS[name]


def kind_of(spec_or_proxy) -> ProxyKind:
    """The kind of a spec (``ProxySpec``, ``LMSpec``) or of a trained proxy (its ``spec``)."""
    spec = getattr(spec_or_proxy, "spec", spec_or_proxy)
    return proxy_kind(spec.kind)


def load_trained_proxy(directory: str | Path) -> TrainedProxy:
    """The proxy saved in ``directory``, by the kind its manifest names (sha256-verified)."""
    return proxy_kind(read_manifest(directory)["spec"]["kind"]).load(Path(directory))


def unsupported_methods(kind: ProxyKind, methods, selectors=None) -> list[str]:
    """The selectors among ``methods`` that need something ``kind`` cannot provide."""
    if selectors is None:
        from curation.selectors import SELECTORS as selectors
    return [m for m in methods if m in selectors and kind.unsupported_needs & set(selectors[m].needs)]


def proxy_help() -> str:
    """``--proxy`` help text, one entry per registered kind."""
    return "Proxy kind: " + "; ".join(f"{k.name} ({k.help})" for k in PROXY_KINDS.values()) + "."
