"""Loss-based selection (EL2N / loss): rank pool examples by how hard the proxy finds them.

EL2N (Paul et al., 2021) is ``||softmax(f(x)) - onehot(y)||_2``; ``loss`` is the cross-entropy.
Both are averaged over the proxy checkpoints. ``keep="hard"`` takes the k highest scores (the
published pruning rule keeps hard examples); ``keep="easy"`` the k lowest. Needs no target set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.errors import CurationError
from curation.selectors.base import SelectionInputs, Selector, top_k

_SCORES = ("el2n", "loss")
_KEEP = ("hard", "easy")


@dataclass(frozen=True)
class El2nSelector(Selector):
    score: str = "el2n"
    keep: str = "hard"
    name = "el2n"
    needs = ("proxy",)

    def __post_init__(self) -> None:
        if self.score not in _SCORES:
            raise CurationError(f"el2n 'score' must be one of {_SCORES}, got {self.score!r}")
        if self.keep not in _KEEP:
            raise CurationError(f"el2n 'keep' must be one of {_KEEP}, got {self.keep!r}")

    def _select(self, inputs: SelectionInputs, k: int):
        probabilities, labels = inputs.proxy_outputs()
        scores = difficulty(probabilities, labels, self.score)
        indices = top_k(scores if self.keep == "hard" else -scores, k)
        return indices, np.ones(k), scores[indices], {}


def difficulty(probabilities: np.ndarray, labels: np.ndarray, score: str = "el2n") -> np.ndarray:
    """Per-example EL2N or cross-entropy from (checkpoints, n, classes) probabilities."""
    rows = np.arange(probabilities.shape[1])
    if score == "loss":
        return -np.log(np.maximum(probabilities[:, rows, labels], 1e-12)).mean(axis=0)
    onehot = np.zeros(probabilities.shape[1:], dtype=np.float32)
    onehot[rows, labels] = 1.0
    return np.linalg.norm(probabilities - onehot[None], axis=2).mean(axis=0)
