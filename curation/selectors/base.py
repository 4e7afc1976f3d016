"""The selector interface: ``Selector.select(inputs, budget) -> Selection``.

A selector is a frozen dataclass of its parameters (the estimator pattern: construction only
stores them); ``select`` does the work. New methods are one module registered in
``curation.selectors.SELECTORS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa

from curation.datastore import GradientStore
from curation.errors import CurationError


@dataclass(frozen=True)
class SelectionInputs:
    """What a selector may read, each built only when asked: pool gradient stores by feature
    kind, target gradient stores, the proxy's (probabilities, labels) on the pool, the class
    labels of (pool, target), and the proxy's input features of the pool (rows, features)."""

    ids: np.ndarray
    pool_gradients: Callable[[str], GradientStore] | None = None
    target_gradients: Callable[[str], GradientStore] | None = None
    proxy_predictions: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    split_labels: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    pool_features: Callable[[], np.ndarray] | None = None

    def pool_store(self, kind: str) -> GradientStore:
        if self.pool_gradients is None:
            raise CurationError("this selector needs a gradient datastore of the pool")
        return self.pool_gradients(kind)

    def proxy_outputs(self) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities of shape (checkpoints, n, classes), labels of shape (n,))."""
        if self.proxy_predictions is None:
            raise CurationError("this selector needs the trained proxy's predictions")
        return self.proxy_predictions()

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(pool labels (n,), target labels (m,)), integer classes."""
        if self.split_labels is None:
            raise CurationError("this selector needs class labels of the pool and the target "
                                "set (a classifier proxy and a labelled target)")
        return self.split_labels()

    def has_input_features(self) -> bool:
        """Whether the proxy's inputs are a (rows, features) float matrix of the pool."""
        return self._float_features() is not None

    def input_features(self) -> np.ndarray:
        """The pool's input features as the proxy reads them, shape (n, features)."""
        features = self._float_features()
        if features is None:
            raise CurationError("this selector option needs the pool's input features as a "
                                "(rows, features) float matrix, as a classifier proxy reads "
                                "them; this proxy's inputs are not")
        return features

    def _float_features(self) -> np.ndarray | None:
        # one call of ``pool_features`` per question: callers need not cache it
        features = None if self.pool_features is None else self.pool_features()
        if (isinstance(features, np.ndarray) and features.ndim == 2
                and np.issubdtype(features.dtype, np.floating) and len(features) == len(self.ids)):
            return features
        return None

    def target_store(self, kind: str) -> GradientStore:
        if self.target_gradients is None:
            raise CurationError("this selector needs a target set (--target)")
        return self.target_gradients(kind)


@dataclass(frozen=True)
class Selection:
    """Chosen pool rows in rank order, with per-example weights and scores."""

    ids: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    scores: np.ndarray
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def to_table(self) -> pa.Table:
        return pa.table({
            "id": pa.array(list(self.ids), pa.string()),
            "weight": pa.array(self.weights, pa.float32()),
            "score": pa.array(self.scores, pa.float32()),
            "rank": pa.array(np.arange(len(self.ids)), pa.int32()),
        })


@dataclass(frozen=True)
class Selector(ABC):
    """Base class: subclasses declare ``name``, ``needs`` and implement ``_select``."""

    name: ClassVar[str]
    # Which inputs the selector reads, so callers build only those: "gradients", "target",
    # "proxy".
    needs: ClassVar[tuple[str, ...]] = ()
    # Options that choose where or how the work runs but not what is selected; left out of
    # ``config()`` so that they do not change the config hash in lineage records.
    execution_only: ClassVar[tuple[str, ...]] = ()

    def config(self) -> dict:
        options = {k: v for k, v in asdict(self).items() if k not in self.execution_only}
        return {"selector": self.name, **options}

    def select(self, inputs: SelectionInputs, budget: float) -> Selection:
        k = resolve_budget(budget, len(inputs.ids))
        indices, weights, scores, info = self._select(inputs, k)
        indices = np.asarray(indices, dtype=np.int64)
        if len(np.unique(indices)) != len(indices) or len(indices) > k:
            raise AssertionError(f"{self.name} returned duplicate or too many indices")
        return Selection(inputs.ids[indices], indices, np.asarray(weights, np.float32),
                         np.asarray(scores, np.float32), {"k": k, **info})

    @abstractmethod
    def _select(self, inputs: SelectionInputs, k: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Return (indices in rank order, weights, scores, extra info)."""


def resolve_budget(budget: float, n: int) -> int:
    """A budget below 1 is a fraction of the pool, otherwise a count of examples."""
    if not np.isfinite(budget) or budget <= 0:
        raise CurationError(f"budget must be > 0 (a fraction below 1 or a count), got {budget}")
    if budget < 1:
        return max(1, int(round(budget * n)))
    if budget != int(budget):
        raise CurationError(f"budget {budget} >= 1 must be a whole count of examples")
    if budget > n:
        raise CurationError(f"budget {int(budget)} is larger than the pool ({n} examples)")
    return int(budget)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, ties broken by lower index (deterministic)."""
    return np.lexsort((np.arange(len(scores)), -scores))[:k]
