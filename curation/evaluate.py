"""Evaluation: train a fresh model on a selection, score it on held-out data.

Every method gets the same trainer: a model of ``EvalConfig.model`` fitted full-batch with
L-BFGS on the mean (optionally per-example weighted) cross-entropy plus an L2 penalty in the
scikit-learn convention (``||W||^2 / (2 C n)``), so results do not depend on a step budget
that would favour one subset size over another. Seeds change the initialization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from curation.errors import CurationError
from curation.proxy import ProxySpec


@dataclass(frozen=True)
class EvalConfig:
    """The evaluation trainer, identical for every selector."""

    model: ProxySpec = field(default_factory=ProxySpec)
    C: float = 10.0
    max_iter: int = 200
    seeds: tuple[int, ...] = (0, 1, 2)
    use_weights: bool = False

    def __post_init__(self) -> None:
        if self.C <= 0:
            raise CurationError(f"evaluation 'C' must be positive, got {self.C}")
        if not self.seeds:
            raise CurationError("evaluation 'seeds' must not be empty")


@dataclass(frozen=True)
class EvalResult:
    accuracies: list[float]
    n_train: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    def to_dict(self) -> dict:
        return {"test_accuracy_mean": self.mean, "test_accuracy_std": self.std,
                "test_accuracies": self.accuracies, "n_train": self.n_train}


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, config: EvalConfig, seed: int,
        sample_weights: np.ndarray | None = None) -> nn.Module:
    """Fit a fresh model of ``config.model`` on (x, y)."""
    model = config.model.build(x.shape[1], n_classes, seed=seed)
    xt = torch.from_numpy(np.array(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    w = torch.ones(len(x)) if sample_weights is None else torch.as_tensor(
        sample_weights, dtype=torch.float32)
    w = w / w.mean().clamp_min(1e-12)
    penalty = 1.0 / (2 * config.C * len(x))
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=config.max_iter,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (nn.functional.cross_entropy(model(xt), yt, reduction="none") * w).mean()
        loss = loss + penalty * sum(p.square().sum() for n, p in model.named_parameters()
                                    if n.endswith("weight"))
        loss.backward()
        return loss

    optimizer.step(closure)
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        pred = model(torch.from_numpy(np.array(x, dtype=np.float32))).argmax(1)
    return float((pred.numpy() == np.asarray(y)).mean())


def evaluate_subset(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                    test_y: np.ndarray, n_classes: int, config: EvalConfig = EvalConfig(),
                    sample_weights: np.ndarray | None = None,
                    seeds: Sequence[int] | None = None) -> EvalResult:
    """Test accuracy of fresh models trained on (train_x, train_y), one per seed."""
    if len(train_x) == 0:
        raise CurationError("cannot evaluate an empty selection")
    weights = sample_weights if config.use_weights else None
    accs = [accuracy(fit(train_x, train_y, n_classes, config, s, weights), test_x, test_y)
            for s in (seeds if seeds is not None else config.seeds)]
    return EvalResult(accs, len(train_x))
