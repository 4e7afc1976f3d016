"""Evaluation: train a fresh model on a selection, score it on held-out data.

Every method gets the same trainer: a model of ``EvalConfig.model`` fitted full-batch with
L-BFGS on the mean (optionally per-example weighted) cross-entropy plus an L2 penalty in the
scikit-learn convention (``||W||^2 / (2 C n)``), so results do not depend on a step budget
that would favour one subset size over another. Seeds change the initialization.

Targets are class indices (cross-entropy) or class probabilities, i.e. soft labels of shape
(n, classes), trained with ``soft_cross_entropy`` (equal to cross-entropy on one-hot targets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from pydantic import Field
from torch import nn

from curation.config import config
from curation.errors import CurationError
from curation.proxies.classifier import ProxySpec


@config("evaluation")
class EvalConfig:
    """The evaluation trainer, identical for every selector."""

    model: ProxySpec = Field(default_factory=ProxySpec, description="Model trained on the subset.")
    C: float = Field(default=10.0, gt=0, description="Inverse L2 strength (scikit-learn convention).")
    max_iter: int = Field(default=200, gt=0, description="L-BFGS iterations.")
    seeds: tuple[int, ...] = Field(default=(0, 1, 2), min_length=1, description="Training seeds.")
    use_weights: bool = Field(default=False, description="Weight examples by the selection weights.")


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


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy against class probabilities: ``-sum_c q_c log softmax(z)_c``.

    It differs from KL(q || softmax(z)) only by the entropy of q, a constant, so both have
    the same gradients.
    """
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)


def _loss_and_targets(y: np.ndarray, n: int, n_classes: int):
    """The per-row loss for ``y`` (class indices or soft labels) and ``y`` as a tensor."""
    y = np.asarray(y)
    if y.ndim == 1:
        return (partial(nn.functional.cross_entropy, reduction="none"),
                torch.from_numpy(y.astype(np.int64)))
    if y.shape != (n, n_classes):
        raise CurationError(f"soft labels must have shape ({n}, {n_classes}), got {y.shape}")
    if not np.isfinite(y).all() or (y < 0).any():
        raise CurationError("soft labels must be finite and non-negative")
    return soft_cross_entropy, torch.from_numpy(np.array(y, dtype=np.float32))


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, config: EvalConfig, seed: int,
        sample_weights: np.ndarray | None = None) -> nn.Module:
    """Fit a fresh model of ``config.model`` on (x, y); y holds labels or soft labels."""
    # Seeded like every loop (``build`` calls ``curation.training.init_seed``), but not
    # ``training.train``: one full-batch L-BFGS solve to convergence has no epochs, batches or snapshots.
    model = config.model.build(x.shape[1], n_classes, seed=seed)
    xt = torch.from_numpy(np.array(x, dtype=np.float32))
    loss_fn, yt = _loss_and_targets(y, len(x), n_classes)
    w = torch.ones(len(x)) if sample_weights is None else torch.as_tensor(
        sample_weights, dtype=torch.float32)
    w = w / w.mean().clamp_min(1e-12)
    penalty = 1.0 / (2 * config.C * len(x))
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=config.max_iter,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (loss_fn(model(xt), yt) * w).mean()
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
                    test_y: np.ndarray, n_classes: int, config: EvalConfig = EvalConfig(),  # noqa: B008 - frozen
                    sample_weights: np.ndarray | None = None,
                    seeds: Sequence[int] | None = None) -> EvalResult:
    """Test accuracy of fresh models trained on (train_x, train_y), one per seed.

    ``train_y`` holds class indices, or soft labels of shape (n, classes).
    """
    if len(train_x) == 0:
        raise CurationError("cannot evaluate an empty selection")
    weights = sample_weights if config.use_weights else None
    accs = [accuracy(fit(train_x, train_y, n_classes, config, s, weights), test_x, test_y)
            for s in (seeds if seeds is not None else config.seeds)]
    return EvalResult(accs, len(train_x))


def evaluate_subsets(scorer, subsets: Sequence[tuple[np.ndarray, np.ndarray | None]],
                     seeds: Sequence[int], pool_size: int | None = None) -> list:
    """THE evaluation of subsets: each (pool rows, weights) scored by ``scorer`` (a proxy
    kind's ``Scorer``: ``ProxyKind.scorer``) over training ``seeds``, one ``SubsetScore`` each.

    With ``pool_size`` the full pool is scored first, as the ``full`` reference (unweighted).
    Metrics, by kind, defined once in the kind's scorer:

    - ``test_accuracy`` (classifiers): mean over seeds of the test accuracy of a fresh model.
    - ``test_loss`` / ``test_perplexity`` (causal LM): the mean over seeds of the held-out
      token-level next-token loss after fine-tuning, and ``exp`` of that mean.
    """
    seeds = list(seeds)
    if not seeds:
        raise CurationError("evaluation needs at least one seed")
    reference = [] if pool_size is None else [(np.arange(pool_size), None)]
    return [scorer.score(np.asarray(rows), weights, seeds) for rows, weights in
            [*reference, *subsets]]
