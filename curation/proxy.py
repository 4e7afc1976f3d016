"""Proxy models and their warm-up training, with checkpoints as safetensors.

Proxy kinds (``ProxySpec.kind``):
- ``linear``: softmax regression over the inputs; cheap, and the right choice over frozen
  sentence embeddings (text pools).
- ``mlp``: one hidden layer (``hidden`` units, ReLU); for raw ``features`` such as pixels.

Warm-up trains on a seeded random fraction of the pool with Adam and saves a checkpoint at
the end of evenly spaced epochs: the model weights and the Adam moments, which Adam-aware
gradient features (LESS) need. With ``initial_checkpoint`` the initialization is saved too, as
epoch 0 (zero moments): expert trajectories for trajectory matching (``curation.distill``)
start there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from curation.errors import CurationError
from curation.io import atomic_path, sha256_file, write_json

PROXY_KINDS = ("linear", "mlp")


def classification_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of one example: ``output`` (1, classes) logits, ``target`` a class index."""
    return nn.functional.cross_entropy(output, target.unsqueeze(0))


@dataclass(frozen=True)
class ProxySpec:
    """Architecture of a proxy (or evaluation) model."""

    kind: str = "linear"
    hidden: int = 128

    def __post_init__(self) -> None:
        if self.kind not in PROXY_KINDS:
            raise CurationError(f"proxy kind {self.kind!r} unknown; expected one of {PROXY_KINDS} "
                               "(or causal-lm, see curation.lm)")

    def build(self, in_dim: int, n_classes: int, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        if self.kind == "linear":
            return nn.Sequential(nn.Linear(in_dim, n_classes))
        return nn.Sequential(nn.Linear(in_dim, self.hidden), nn.ReLU(),
                             nn.Linear(self.hidden, n_classes))


@dataclass(frozen=True)
class WarmupConfig:
    """Warm-up training of the proxy: which fraction of the pool, how long, how many snapshots."""

    fraction: float = 0.05
    epochs: int = 4
    checkpoints: int = 4
    lr: float = 1e-2
    batch_size: int = 16
    weight_decay: float = 0.0
    seed: int = 0
    initial_checkpoint: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise CurationError(f"warm-up 'fraction' must be in (0, 1], got {self.fraction}")
        if not 1 <= self.checkpoints <= self.epochs:
            raise CurationError(
                f"warm-up 'checkpoints' must be between 1 and 'epochs' ({self.epochs}), "
                f"got {self.checkpoints}"
            )


@dataclass(frozen=True)
class Checkpoint:
    """One saved proxy state: weights, Adam moments and the learning rate in use."""

    epoch: int
    model_path: Path
    optimizer_path: Path
    lr: float
    step: int
    sha256: str


@dataclass(frozen=True)
class Proxy:
    """A trained proxy: its spec, shape, and checkpoints in training order."""

    spec: ProxySpec
    in_dim: int
    n_classes: int
    checkpoints: list[Checkpoint] = field(default_factory=list)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def load_model(self, checkpoint: Checkpoint) -> nn.Module:
        model = self.spec.build(self.in_dim, self.n_classes)
        model.load_state_dict(load_file(checkpoint.model_path))
        return model.eval()

    def load_moments(self, checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
        """Adam state keyed ``exp_avg.<param>`` / ``exp_avg_sq.<param>``."""
        return load_file(checkpoint.optimizer_path)

    def gradient_parameters(self, model: nn.Module, which: str | Sequence[str] = "all"
                            ) -> list[str]:
        """Parameters whose gradients a datastore records (see ``parameter_names``)."""
        return parameter_names(model, which)

    @staticmethod
    def example_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return classification_loss(output, target)

    @staticmethod
    def batch(inputs: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of the datastore's inputs and labels as the model's (x, y) tensors."""
        return (torch.from_numpy(np.array(inputs, dtype=np.float32)),
                torch.from_numpy(np.asarray(labels, dtype=np.int64)))

    def save(self, directory: Path) -> Path:
        record = {
            "spec": asdict(self.spec), "in_dim": self.in_dim, "n_classes": self.n_classes,
            "betas": list(self.betas), "eps": self.eps,
            "checkpoints": [
                {**asdict(c), "model_path": c.model_path.name,
                 "optimizer_path": c.optimizer_path.name}
                for c in self.checkpoints
            ],
        }
        return write_json(directory / "proxy.json", record)


def load_proxy(directory: str | Path) -> Proxy:
    """Open a proxy saved by ``warmup``; checkpoint files are verified by sha256."""
    record, checkpoints = read_proxy_record(directory)
    return Proxy(ProxySpec(**record["spec"]), record["in_dim"], record["n_classes"],
                 checkpoints, tuple(record["betas"]), record["eps"])


def read_proxy_record(directory: str | Path) -> tuple[dict, list[Checkpoint]]:
    """A proxy directory's ``proxy.json`` and its checkpoints, each verified by sha256."""
    directory = Path(directory)
    manifest = directory / "proxy.json"
    if not manifest.exists():
        raise CurationError(f"proxy manifest not found: {manifest}")
    record = json.loads(manifest.read_text())
    checkpoints = []
    for c in record["checkpoints"]:
        ckpt = Checkpoint(**{**c, "model_path": directory / c["model_path"],
                             "optimizer_path": directory / c["optimizer_path"]})
        if not ckpt.model_path.exists() or sha256_file(ckpt.model_path) != ckpt.sha256:
            raise CurationError(f"proxy checkpoint {ckpt.model_path} is missing or does not "
                                "match its sha256")
        checkpoints.append(ckpt)
    return record, checkpoints


def checkpoint_epochs(epochs: int, checkpoints: int) -> list[int]:
    """Evenly spaced epochs (1-based) at which to snapshot; always includes the last."""
    return sorted({int(round(e)) for e in np.linspace(epochs / checkpoints, epochs, checkpoints)})


def warmup(inputs: np.ndarray, labels: np.ndarray, n_classes: int, out_dir: str | Path,
           spec: ProxySpec = ProxySpec(), config: WarmupConfig = WarmupConfig()) -> Proxy:
    """Train a proxy on a seeded fraction of the pool and save its checkpoints under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    n_train = max(n_classes, int(round(config.fraction * len(inputs))))
    subset = np.sort(rng.choice(len(inputs), size=min(n_train, len(inputs)), replace=False))
    x = torch.from_numpy(np.ascontiguousarray(inputs[subset], dtype=np.float32))
    y = torch.from_numpy(labels[subset].astype(np.int64))

    model = spec.build(inputs.shape[1], n_classes, seed=config.seed)
    betas = (0.9, 0.999)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=betas,
                                 weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    snapshot_at = set(checkpoint_epochs(config.epochs, config.checkpoints))
    checkpoints: list[Checkpoint] = []
    if config.initial_checkpoint:
        checkpoints.append(save_checkpoint(model, optimizer, out_dir, 0, 0, config.lr))
    step = 0
    for epoch in range(1, config.epochs + 1):
        for batch in torch.randperm(len(x), generator=generator).split(config.batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            step += 1
        if epoch in snapshot_at:
            checkpoints.append(save_checkpoint(model, optimizer, out_dir, epoch, step, config.lr))
    proxy = Proxy(spec, inputs.shape[1], n_classes, checkpoints, betas, 1e-8)
    proxy.save(out_dir)
    return proxy


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


def parameter_names(model: nn.Module, which: str | Sequence[str] = "all") -> list[str]:
    """Parameters whose gradients are recorded: ``all``, ``last`` (the output layer), or names."""
    names = [n for n, _ in model.named_parameters()]
    if which == "all":
        return names
    if which == "last":
        prefix = names[-1].rsplit(".", 1)[0]
        return [n for n in names if n.startswith(prefix + ".")]
    unknown = sorted(set(which) - set(names))
    if unknown:
        raise CurationError(f"unknown parameter names {unknown}; the model has {names}")
    return list(which)


def predict_probabilities(proxy: Proxy, inputs: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Softmax outputs of every checkpoint on ``inputs``: shape (checkpoints, n, classes)."""
    if not isinstance(proxy, Proxy):
        raise CurationError(f"class predictions need a classifier proxy (linear or mlp); a "
                            f"{proxy.spec.kind} proxy makes none: use gtp, less or random")
    x = torch.from_numpy(np.array(inputs, dtype=np.float32))
    out = np.empty((len(proxy.checkpoints), len(x), proxy.n_classes), dtype=np.float32)
    with torch.no_grad():
        for c, ckpt in enumerate(proxy.checkpoints):
            model = proxy.load_model(ckpt)
            for start in range(0, len(x), batch_size):
                logits = model(x[start:start + batch_size])
                out[c, start:start + len(logits)] = torch.softmax(logits, dim=1).numpy()
    return out
