"""Classifier proxies (kinds ``linear`` and ``mlp``) and their warm-up training.

- ``linear``: softmax regression over the inputs; cheap, and the right choice over frozen
  sentence embeddings (text pools).
- ``mlp``: one hidden layer (``hidden`` units, ReLU); for raw ``features`` such as pixels.

Warm-up trains on a seeded random fraction of the pool with Adam and saves a checkpoint at
the end of evenly spaced epochs: the model weights and the Adam moments, which Adam-aware
gradient features (LESS) need. With ``initial_checkpoint`` the initialization is saved too, as
epoch 0 (zero moments): expert trajectories for trajectory matching (``curation.distill``)
start there. Model inputs are the pool's ``features`` or sentence embeddings of its ``text``
(``curation.embed``); evaluation trains fresh classifiers (``curation.evaluate``) and reports
test accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, model_validator
from safetensors.torch import load_file
from torch import nn

from curation.config import choice, config, default_of
from curation.errors import CurationError
from curation.io import write_json
from curation.proxies.base import (
    Checkpoint,
    EvalData,
    ProxyKind,
    SubsetScore,
    checkpoint_epochs,
    checkpoint_records,
    read_proxy_record,
)
from curation.training import init_seed, numpy_rng, train

CLASSIFIER_KINDS = ("linear", "mlp")


def classification_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of one example: ``output`` (1, classes) logits, ``target`` a class index."""
    return nn.functional.cross_entropy(output, target.unsqueeze(0))


@config("proxy")
class ProxySpec:
    """Architecture of a proxy (or evaluation) model."""

    kind: choice(CLASSIFIER_KINDS) = Field(
        default="linear", description="linear (softmax regression) or mlp (one hidden layer).")
    hidden: int = Field(default=128, gt=0, description="Hidden units of the mlp.")

    def build(self, in_dim: int, n_classes: int, seed: int = 0) -> nn.Module:
        init_seed(seed)
        if self.kind == "linear":
            return nn.Sequential(nn.Linear(in_dim, n_classes))
        return nn.Sequential(nn.Linear(in_dim, self.hidden), nn.ReLU(),
                             nn.Linear(self.hidden, n_classes))


@config("warm-up")
class WarmupConfig:
    """Warm-up training of the proxy: which fraction of the pool, how long, how many snapshots."""

    fraction: float = Field(default=0.05, gt=0, le=1,
                            description="Fraction of the pool the proxy warms up on.")
    epochs: int = Field(default=4, gt=0, description="Warm-up epochs.")
    checkpoints: int = Field(default=4, ge=1,
                             description="Checkpoints kept (evenly spaced epochs, the last included).")
    lr: float = Field(default=1e-2, gt=0, description="Adam learning rate.")
    batch_size: int = Field(default=16, gt=0, description="Examples per Adam step.")
    weight_decay: float = Field(default=0.0, ge=0, description="Adam weight decay.")
    seed: int = Field(default=0, description="Seed of the warm-up sample, initialization and order.")
    initial_checkpoint: bool = Field(default=False, description=(
        "Also save the initialization as epoch 0 (expert trajectories start there)."))

    @model_validator(mode="after")
    def _checkpoints_fit(self):
        if self.checkpoints > self.epochs:
            raise ValueError(f"'checkpoints' must be at most 'epochs' ({self.epochs}), "
                             f"got {self.checkpoints}")
        return self


DEFAULT_SPEC, DEFAULT_WARMUP = ProxySpec(), WarmupConfig()


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
            "checkpoints": checkpoint_records(self.checkpoints),
        }
        return write_json(directory / "proxy.json", record)


def load_proxy(directory: str | Path) -> Proxy:
    """Open a proxy saved by ``warmup``; checkpoint files are verified by sha256."""
    record, checkpoints = read_proxy_record(directory)
    return Proxy(ProxySpec(**record["spec"]), record["in_dim"], record["n_classes"],
                 checkpoints, tuple(record["betas"]), record["eps"])


def warmup(inputs: np.ndarray, labels: np.ndarray, n_classes: int, out_dir: str | Path,
           spec: ProxySpec = DEFAULT_SPEC, config: WarmupConfig = DEFAULT_WARMUP) -> Proxy:
    """Train a proxy on a seeded fraction of the pool and save its checkpoints under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = numpy_rng(config.seed)
    n_train = max(n_classes, int(round(config.fraction * len(inputs))))
    subset = np.sort(rng.choice(len(inputs), size=min(n_train, len(inputs)), replace=False))
    x = torch.from_numpy(np.ascontiguousarray(inputs[subset], dtype=np.float32))
    y = torch.from_numpy(labels[subset].astype(np.int64))

    model = spec.build(inputs.shape[1], n_classes, seed=config.seed)
    betas = (0.9, 0.999)
    snapshot_at = set(checkpoint_epochs(config.epochs, config.checkpoints))
    if config.initial_checkpoint:
        snapshot_at.add(0)
    checkpoints = train(
        model, model.parameters(),
        lambda batch: nn.functional.cross_entropy(model(x[batch]), y[batch]), len(x),
        batch_size=config.batch_size, epochs=config.epochs, seed=config.seed, lr=config.lr,
        weight_decay=config.weight_decay, betas=betas, out_dir=out_dir, snapshot_at=snapshot_at)
    proxy = Proxy(spec, inputs.shape[1], n_classes, checkpoints, betas, 1e-8)
    proxy.save(out_dir)
    return proxy


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
    x = torch.from_numpy(np.array(inputs, dtype=np.float32))
    out = np.empty((len(proxy.checkpoints), len(x), proxy.n_classes), dtype=np.float32)
    with torch.no_grad():
        for c, ckpt in enumerate(proxy.checkpoints):
            model = proxy.load_model(ckpt)
            for start in range(0, len(x), batch_size):
                logits = model(x[start:start + batch_size])
                out[c, start:start + len(logits)] = torch.softmax(logits, dim=1).numpy()
    return out


def cached_classifier(work_dir: Path, pool_id: str, inputs: np.ndarray, labels: np.ndarray,
                      n_classes: int, spec: ProxySpec, config: WarmupConfig) -> Proxy:
    """Warm up a proxy on the pool, or reuse the one already trained with the same config
    (under ``work_dir/proxies/<hash of pool, classes, spec, warm-up>``)."""
    from curation.lineage import config_hash

    key = config_hash({"pool_id": pool_id, "n_classes": n_classes,
                       "proxy": asdict(spec), "warmup": asdict(config)})
    directory = Path(work_dir) / "proxies" / key
    if (directory / "proxy.json").exists():
        return load_proxy(directory)
    return warmup(inputs, labels, n_classes, directory, spec, config)


def _matrix(data: EvalData, split: str, pool) -> np.ndarray:
    """A split's model inputs: given (an array or a ``.npy`` path), else computed and cached."""
    from curation.embed import input_matrix

    given = data.inputs.get(split)
    if given is None:
        return input_matrix(pool, data.work_dir / "embeddings", data.progress)
    return np.load(given) if isinstance(given, str | Path) else given


class ClassifierScorer:
    """Fresh classifiers (``curation.evaluate``) trained on a subset's inputs: test accuracy.

    ``test_accuracy`` is the mean over training seeds of the fraction of test rows classified
    right."""

    def __init__(self, data: EvalData, evaluation) -> None:
        from curation.pool import n_classes_of

        self.data, self.evaluation = data, evaluation
        self.pool_x, self.test_x = _matrix(data, "pool", data.pool), _matrix(data, "test", data.test)
        self.n_classes = n_classes_of(*(p for p in (data.pool, data.test, data.target)
                                        if p is not None))

    def score(self, rows: np.ndarray, weights: np.ndarray | None,
              seeds: Sequence[int]) -> SubsetScore:
        from curation.evaluate import evaluate_subset

        pool, test = self.data.pool, self.data.test
        result = evaluate_subset(self.pool_x[rows], pool.labels[rows], self.test_x, test.labels,
                                 self.n_classes, self.evaluation, weights, seeds=list(seeds))
        return SubsetScore({"test_accuracy": result.mean}, result.accuracies, len(rows),
                           result.to_dict())

    def untrained(self) -> None:
        return None

    def reference(self) -> None:
        return None


class ClassifierKind(ProxyKind):
    """``linear`` / ``mlp``: a classifier head over features or sentence embeddings."""

    needs_labels = True
    unsupported_needs = frozenset()
    metric, metric_label, lower_is_better = "test_accuracy", "accuracy", False
    default_checkpoints = 4
    default_warmup = WarmupConfig()

    def __init__(self, name: str, help: str) -> None:
        self.name, self.help = name, help

    def spec(self, **options) -> ProxySpec:
        return ProxySpec(self.name, **options)

    def settings(self, work_dir, pool, target, *, checkpoints=None, dim=None, seed=0,
                 spec_options=None, warmup=None, base=None, pretrain_docs=0, train_base=None,
                 progress=False):
        from curation.datastore import DatastoreSpec
        from curation.workflow import GradientSettings

        if base:
            raise CurationError(f"a base model (--lm-base) needs --proxy causal-lm, not {self.name}")
        checkpoints = checkpoints or self.default_checkpoints
        warmup = warmup or WarmupConfig(epochs=max(4, checkpoints), checkpoints=checkpoints,
                                        seed=seed)
        dim = default_of(DatastoreSpec, "dim") if dim is None else dim
        return GradientSettings(self.spec(**(spec_options or {})), warmup,
                                DatastoreSpec(dim=dim, seed=seed))

    def prepare(self, work_dir, pool, target, settings, progress=False, inputs=None,
                n_classes=None):
        from curation.pool import n_classes_of

        data = EvalData(pool, pool, target, Path(work_dir), inputs or {}, progress)
        pool_x = _matrix(data, "pool", pool)
        if n_classes is None:
            n_classes = n_classes_of(*([pool] if target is None else [pool, target]))
        proxy = cached_classifier(work_dir, pool.content_hash, pool_x, pool.labels, n_classes,
                                  settings.proxy, settings.warmup)
        splits = {"pool": (pool_x, pool.labels)}
        if target is not None:
            target_x = _matrix(data, "target", target)
            if pool_x.shape[1] != target_x.shape[1]:
                raise CurationError(
                    f"target inputs have {target_x.shape[1]} dims but the pool has {pool_x.shape[1]}"
                )
            splits["target"] = (target_x, target.labels)
        return proxy, splits

    def load(self, directory) -> Proxy:
        return load_proxy(directory)

    def store_inputs(self, proxy, split, inputs_path):
        if inputs_path is None:
            raise CurationError("a classifier proxy needs the split's input matrix")
        return np.load(inputs_path), split.labels

    def scorer(self, data, proxy=None, settings=None, evaluation=None, lm_evaluation=None):
        from curation.evaluate import EvalConfig

        return ClassifierScorer(data, evaluation or EvalConfig())

    def checkpoint_report(self, proxy, test, test_inputs) -> list[dict]:
        from curation.evaluate import accuracy

        test_x = np.load(test_inputs) if isinstance(test_inputs, str | Path) else test_inputs
        return [{"epoch": c.epoch, "step": c.step, "sha256": c.sha256[:12],
                 "test_accuracy": accuracy(proxy.load_model(c), test_x, test.labels)}
                for c in proxy.checkpoints]

    def describe(self, proxy) -> dict:
        return {"n_classes": proxy.n_classes}

    def predictions(self, proxy, inputs) -> np.ndarray:
        return predict_probabilities(proxy, inputs)


LINEAR = ClassifierKind("linear", "softmax regression (over features or sentence embeddings)")
MLP = ClassifierKind("mlp", "one hidden layer of 'hidden' ReLU units (for raw features)")
