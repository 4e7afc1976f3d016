"""Gradient Trajectory Pursuit (GTP): joint L0-budgeted selection by non-negative pursuit.

Atoms are pool gradient trajectories (per-checkpoint blocks concatenated, each scaled by a
checkpoint weight); the target is the mean target-gradient trajectory. Pursuit picks the atom
most correlated with the residual, refits non-negative weights on all picks, and repeats, so
an example whose contribution is already explained (a near-duplicate) is not picked again.
If the residual has no positive correlation left before the budget is spent, the rest is
filled by cosine similarity to the target (weight 0) and ``info['n_pursuit']`` says how many
picks came from pursuit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.errors import CurationError
from curation.selectors.base import SelectionInputs, Selector, top_k

_CHECKPOINT_WEIGHTING = ("uniform", "lr")


@dataclass(frozen=True)
class GTPSelector(Selector):
    feature_kind: str = "sgd"
    checkpoint_weighting: str = "uniform"
    nonnegative: bool = True
    tol: float = 1e-6
    name = "gtp"
    needs = ("gradients", "target")

    def __post_init__(self) -> None:
        if self.checkpoint_weighting not in _CHECKPOINT_WEIGHTING:
            raise CurationError(
                f"gtp 'checkpoint_weighting' must be one of {_CHECKPOINT_WEIGHTING}, "
                f"got {self.checkpoint_weighting!r}"
            )

    def _select(self, inputs: SelectionInputs, k: int):
        from curation.pursuit import pursuit  # numba loads only when GTP runs

        store = inputs.pool_store(self.feature_kind)
        lrs = store.checkpoint_lrs
        weights = lrs / lrs.sum() if self.checkpoint_weighting == "lr" else None
        atoms = store.trajectories(weights)
        target = inputs.target_store("sgd").trajectories(weights).mean(axis=0)
        result = pursuit(atoms, target, k, nonnegative=self.nonnegative, tol=self.tol)
        picked = np.asarray(result.indices, dtype=np.int64)
        chosen_weights = np.asarray(result.weights, dtype=np.float64)
        scores = np.asarray(result.correlations, dtype=np.float64)
        n_pursuit = len(picked)
        if n_pursuit < k:
            cosine = atoms @ target / np.maximum(
                np.linalg.norm(atoms, axis=1) * np.linalg.norm(target), 1e-12)
            cosine[picked] = -np.inf
            fill = top_k(cosine, k - n_pursuit)
            picked = np.concatenate([picked, fill])
            chosen_weights = np.concatenate([chosen_weights, np.zeros(len(fill))])
            scores = np.concatenate([scores, cosine[fill]])
        residual = result.residual_norms[-1] / max(np.linalg.norm(target), 1e-12) \
            if len(result.residual_norms) else 1.0
        return picked, chosen_weights, scores, {
            "n_pursuit": n_pursuit, "relative_residual": float(residual)}
