"""Loss-based selection (EL2N / loss): rank pool examples by how hard the proxy finds them.

EL2N (Paul et al., 2021) is ``||softmax(f(x)) - onehot(y)||_2``; ``loss`` is the cross-entropy.
Both are averaged over the proxy checkpoints. ``keep="hard"`` takes the k highest scores (the
published pruning rule keeps hard examples); ``keep="easy"`` the k lowest. Needs no target set.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from curation.config import choice, config
from curation.selectors.base import SelectionInputs, Selector, top_k

_SCORES = ("el2n", "loss")
_KEEP = ("hard", "easy")


@config("el2n")
class El2nSelector(Selector):
    score: choice(_SCORES) = Field(default="el2n", description="Difficulty: el2n or loss (cross-entropy).")
    keep: choice(_KEEP) = Field(default="hard", description="Keep the hard or the easy examples.")
    name = "el2n"
    needs = ("proxy",)

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
