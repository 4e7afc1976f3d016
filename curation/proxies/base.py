"""What every proxy kind shares: the trained-proxy protocol, the checkpoint format, the kind API.

A proxy KIND (``linear``, ``mlp``, ``causal-lm``) is an object implementing :class:`ProxyKind`,
registered by name in ``curation.proxies.PROXY_KINDS``. Callers never branch on a kind: they
look it up (``proxy_kind(name)``, ``kind_of(spec)``, ``kind_of_proxy(proxy)``) and call it.

Checkpoints
    ``checkpoint-<epoch>.safetensors`` (weights) and ``optimizer-<epoch>.safetensors`` (Adam
    moments ``exp_avg.<param>`` / ``exp_avg_sq.<param>``) beside a ``proxy.json`` manifest that
    lists them with the sha256 of the weights; ``read_proxy_record`` verifies every one.

This module imports no other proxy module and nothing of the datastore, so ``curation.datastore``
can import :class:`TrainedProxy` from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from curation.errors import CurationError
from curation.io import atomic_path, sha256_file

if TYPE_CHECKING:
    from curation.pool import Pool


class TrainedProxy(Protocol):
    """What a gradient store needs of a trained proxy; every kind's proxy provides it."""

    checkpoints: list
    betas: tuple[float, float]
    eps: float

    @property
    def in_dim(self) -> int: ...

    def load_model(self, checkpoint) -> torch.nn.Module: ...

    def load_moments(self, checkpoint) -> dict[str, torch.Tensor]: ...

    def gradient_parameters(self, model: torch.nn.Module, which) -> list[str]: ...

    def example_loss(self, output, target: torch.Tensor) -> torch.Tensor: ...

    def batch(self, inputs: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class Checkpoint:
    """One saved proxy state: weights, Adam moments and the learning rate in use."""

    epoch: int
    model_path: Path
    optimizer_path: Path
    lr: float
    step: int
    sha256: str


def checkpoint_records(checkpoints: Sequence[Checkpoint]) -> list[dict]:
    """Checkpoints as a manifest lists them (file names relative to the proxy directory)."""
    from dataclasses import asdict

    return [{**asdict(c), "model_path": c.model_path.name, "optimizer_path": c.optimizer_path.name}
            for c in checkpoints]


def read_proxy_record(directory: str | Path) -> tuple[dict, list[Checkpoint]]:
    """A proxy directory's ``proxy.json`` and its checkpoints, each verified by sha256."""
    directory = Path(directory)
    record = read_manifest(directory)
    checkpoints = []
    for c in record["checkpoints"]:
        ckpt = Checkpoint(**{**c, "model_path": directory / c["model_path"],
                             "optimizer_path": directory / c["optimizer_path"]})
        if not ckpt.model_path.exists() or sha256_file(ckpt.model_path) != ckpt.sha256:
            raise CurationError(f"proxy checkpoint {ckpt.model_path} is missing or does not "
                                "match its sha256")
        checkpoints.append(ckpt)
    return record, checkpoints


def read_manifest(directory: str | Path) -> dict:
    """The ``proxy.json`` of a proxy directory (not verified: see ``read_proxy_record``)."""
    manifest = Path(directory) / "proxy.json"
    if not manifest.exists():
        raise CurationError(f"proxy manifest not found: {manifest}")
    return json.loads(manifest.read_text())


def checkpoint_epochs(epochs: int, checkpoints: int) -> list[int]:
    """Evenly spaced epochs (1-based) at which to snapshot; always includes the last."""
    return sorted({int(round(e)) for e in np.linspace(epochs / checkpoints, epochs, checkpoints)})


def save_checkpoint(model: nn.Module, optimizer: torch.optim.Adam, out_dir: Path, epoch: int,
                    step: int, lr: float, weights: dict[str, torch.Tensor] | None = None
                    ) -> Checkpoint:
    """Write ``weights`` (default: the model's whole state dict) and the Adam moments of every
    trainable parameter as ``checkpoint-/optimizer-<epoch>.safetensors``, atomically."""
    moments = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # Before the first step Adam has no state yet: its moments are zero.
        slot = optimizer.state[param]
        for key in ("exp_avg", "exp_avg_sq"):
            moments[f"{key}.{name}"] = slot.get(key, torch.zeros_like(param)).detach().cpu().clone()
    if weights is None:
        weights = model.state_dict()
    state = {k: v.detach().cpu().clone().contiguous() for k, v in weights.items()}
    model_path = out_dir / f"checkpoint-{epoch:03d}.safetensors"
    optimizer_path = out_dir / f"optimizer-{epoch:03d}.safetensors"
    with atomic_path(model_path) as tmp:
        save_file(state, str(tmp))
    with atomic_path(optimizer_path) as tmp:
        save_file(moments, str(tmp))
    return Checkpoint(epoch, model_path, optimizer_path, lr, step, sha256_file(model_path))


@dataclass(frozen=True)
class SubsetScore:
    """A subset's evaluation: ``metrics`` (the record fields, the kind's ``metric`` among them),
    the kind's metric per seed, and ``summary`` (what ``curation evaluate`` writes: mean, std and
    per-seed values)."""

    metrics: dict[str, float]
    per_seed: list[float]
    n_train: int
    summary: dict = field(default_factory=dict)


class Scorer(Protocol):
    """Trains on pool rows (with optional weights) and scores on the test split, per seed."""

    def score(self, rows: np.ndarray, weights: np.ndarray | None,
              seeds: Sequence[int]) -> SubsetScore: ...

    def untrained(self) -> dict[str, float] | None:
        """The starting point's metrics without training on any subset (None: not defined)."""

    def reference(self) -> dict[str, float] | None:
        """The base model's metrics before any training (None: not defined)."""


@dataclass(frozen=True)
class EvalData:
    """What a scorer evaluates on: the splits, and (optionally) their precomputed model inputs."""

    pool: Pool
    test: Pool
    target: Pool | None = None
    work_dir: Path = Path(".")
    inputs: dict[str, Any] = field(default_factory=dict)  # split -> inputs (array or .npy path)
    progress: bool = False


class ProxyKind:
    """The interface a proxy kind implements; one instance per registered name.

    Class attributes describe the kind; methods are every place the chain used to branch on it.
    """

    name: str = ""
    help: str = ""
    needs_labels: bool = True
    takes_base: bool = False  # starts from a local base model directory (--lm-base)
    # Selector ``needs`` this kind cannot serve (``proxy``: class predictions, which el2n reads).
    unsupported_needs: ClassVar[frozenset[str]] = frozenset()
    metric: str = "test_accuracy"  # the record field compared across methods
    metric_label: str = "accuracy"
    lower_is_better: bool = False
    default_checkpoints: int = 4
    # Demo-scenario sizes of ``curation benchmark --scenario`` and whether its title names the kind.
    benchmark_scenario: ClassVar[dict] = {"pool_size": 3000, "test_size": 0, "titled": False}
    default_warmup: Any = None  # the warm-up config a kind trains with by default

    def spec(self, **options: Any) -> Any:
        """The kind's architecture spec (``ProxySpec`` / ``LMSpec``) from ``options``."""
        raise NotImplementedError

    def settings(self, work_dir: Path, pool: Pool | None, target: Pool | None, *,
                 checkpoints: int | None = None, dim: int | None = None, seed: int = 0,
                 spec_options: dict | None = None, warmup: Any = None, base: str | Path | None = None,
                 pretrain_docs: int = 0, train_base: bool | None = None,
                 progress: bool = False):
        """The ``GradientSettings`` (spec, warm-up, datastore) of this kind for a pool."""
        raise NotImplementedError

    def prepare(self, work_dir: Path, pool: Pool, target: Pool | None, settings: Any,
                progress: bool = False, inputs: dict[str, Any] | None = None,
                n_classes: int | None = None) -> tuple[Any, dict[str, tuple]]:
        """The warmed-up proxy (trained, or reused from ``work_dir``'s cache) and each split's
        datastore inputs ``{"pool": (x, y), "target": (x, y)}``."""
        raise NotImplementedError

    def load(self, directory: Path) -> TrainedProxy:
        """Open a proxy saved in ``directory`` (files verified by sha256)."""
        raise NotImplementedError

    def store_inputs(self, proxy: TrainedProxy, split: Pool,
                     inputs_path: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
        """A split's datastore inputs for ``proxy`` (``inputs_path``: its stored model inputs)."""
        raise NotImplementedError

    def store_spec(self, spec: Any) -> Any:
        """The datastore spec this kind's stores are built with (e.g. a capped batch)."""
        return spec

    def scorer(self, data: EvalData, proxy: Any = None, settings: Any = None,
               evaluation: Any = None, lm_evaluation: Any = None) -> Scorer:
        """A scorer of subsets of ``data.pool``. ``proxy`` (or ``settings``, to warm one up) is the
        warmed-up proxy where the kind's evaluation starts from it."""
        raise NotImplementedError

    def checkpoint_report(self, proxy: Any, test: Pool, test_inputs: Any) -> list[dict]:
        """Per checkpoint: epoch, step, sha256 prefix and the test metrics (asset metadata)."""
        raise NotImplementedError

    def describe(self, proxy: Any) -> dict:
        """A few facts about a trained proxy of this kind, for asset metadata."""
        return {}

    def predictions(self, proxy: Any, inputs: np.ndarray) -> np.ndarray:
        """Class probabilities of every checkpoint, shape (checkpoints, n, classes)."""
        raise CurationError(f"class predictions need a classifier proxy (linear or mlp); a "
                            f"{self.name} proxy makes none: use gtp, less or random")
