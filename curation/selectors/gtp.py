"""Gradient Trajectory Pursuit (GTP): joint L0-budgeted selection by non-negative pursuit.

Atoms are pool gradient trajectories (per-checkpoint blocks concatenated, each scaled by a
checkpoint weight); the target is the mean target-gradient trajectory. Pursuit picks the atom
most correlated with the residual, refits non-negative weights on all picks, and repeats, so
an example whose contribution is already explained (a near-duplicate) is not picked again.
If the residual has no positive correlation left before the budget is spent, the rest is
filled by cosine similarity to the target (weight 0) and ``info['n_pursuit']`` says how many
picks came from pursuit.

The pool store's float16 shards are read in place (``GradientStore.atoms``: memory-mapped
per pass, see ``curation.pursuit.MappedRows``); no float32 copy of the store is made, for either
checkpoint weighting: a weight per checkpoint is a per-column scale of the atoms, applied inside
the pursuit. Scale options: ``refresh > 1`` is the lazy-greedy pursuit (a full pass over the pool
at most every ``refresh`` steps; approximate); ``shards > 1`` scores the pool in that many
tasks per pass (``curation.pursuit.sharded_pursuit``), on the Dask cluster at ``scheduler`` if
one is given (its workers must see the store's directory). Sharding and the scheduler change
where the work runs, not the selection, so ``scheduler`` is left out of the selector's config
(and its hash); ``shards`` stays in it as a record of how the run was split.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from curation.config import choice, config
from curation.datastore import GradientStore
from curation.errors import CurationError
from curation.gradients import FEATURE_KINDS
from curation.search import SEARCH_BACKENDS
from curation.selectors.base import SelectionInputs, Selector, top_k

_CHECKPOINT_WEIGHTING = ("uniform", "lr")


@config("gtp")
class GTPSelector(Selector):
    feature_kind: choice(FEATURE_KINDS) = Field(
        default="sgd", description="Pool features: sgd (plain gradients) or adam.")
    checkpoint_weighting: choice(_CHECKPOINT_WEIGHTING) = Field(
        default="uniform", description="Weight of each checkpoint: uniform, or lr (its learning rate).")
    nonnegative: bool = Field(default=True, description="Non-negative weights in the pursuit refit.")
    tol: float = Field(default=1e-6, ge=0, allow_inf_nan=False,
                       description="Stop when the residual (or the best correlation) is at most "
                                   "tol times the target's norm.")
    # strict: an integer, not a bool or a float (as before the configs were declared once)
    shards: int = Field(default=1, ge=1, strict=True,
                        description="Tasks scoring the pool per pursuit pass (1: one pass in process).")
    refresh: int = Field(default=1, ge=1, strict=True,
                         description="Full pass over the pool at most every this many steps "
                                     "(lazy greedy, approximate above 1).")
    scheduler: str = Field(default="", description="Dask scheduler address for the shards; "
                                                   "'' runs in this process.")
    search: choice(SEARCH_BACKENDS) = Field(
        default="exact", description="Each pursuit step: exact (score every atom) or faiss "
                                     "(the store's inner-product index; approximate).")
    name = "gtp"
    needs = ("gradients", "target")
    execution_only = ("scheduler",)

    def _select(self, inputs: SelectionInputs, k: int):
        # numba loads only when GTP runs
        from curation.pursuit import correlations, pursuit, sharded_pursuit

        store = inputs.pool_store(self.feature_kind)
        scale = checkpoint_scale(store, self.checkpoint_weighting)
        atoms = store.atoms()
        target = inputs.target_store("sgd").mean().reshape(-1)
        if scale is not None:
            target = target * scale
        options = {"nonnegative": self.nonnegative, "tol": self.tol, "column_scale": scale,
                   "refresh": self.refresh}
        if self.search != "exact":
            if self.shards > 1 or self.refresh > 1:
                raise CurationError(f"gtp 'search': {self.search!r} searches the store's index "
                                    "in process; set shards=1 and refresh=1")
            from curation.datastore.index import store_index

            result = pursuit(atoms, target, k, search=self.search,
                             index=store_index(store, self.search), **options)
        elif self.shards > 1:
            result = sharded_pursuit(atoms, target, k, shards=min(self.shards, store.n),
                                     scheduler=self.scheduler or None, **options)
        else:
            result = pursuit(atoms, target, k, **options)
        picked = np.asarray(result.indices, dtype=np.int64)
        chosen_weights = np.asarray(result.weights, dtype=np.float64)
        scores = np.asarray(result.correlations, dtype=np.float64)
        n_pursuit = len(picked)
        if n_pursuit < k:
            cosine = correlations(atoms, target, column_scale=scale) / max(
                float(np.linalg.norm(target)), 1e-12)
            cosine[picked] = -np.inf
            fill = top_k(cosine, k - n_pursuit)
            picked = np.concatenate([picked, fill])
            chosen_weights = np.concatenate([chosen_weights, np.zeros(len(fill))])
            scores = np.concatenate([scores, cosine[fill]])
        residual = result.residual_norms[-1] / max(np.linalg.norm(target), 1e-12) \
            if len(result.residual_norms) else 1.0
        return picked, chosen_weights, scores, {
            "n_pursuit": n_pursuit, "relative_residual": float(residual),
            "passes": int(result.passes)}


def checkpoint_scale(store: GradientStore, weighting: str) -> np.ndarray | None:
    """Per-column scale of the trajectories: None (uniform) or lr-proportional checkpoint weights
    (summing to one) repeated over each checkpoint's ``dim`` columns."""
    if weighting == "uniform":
        return None
    lrs = store.checkpoint_lrs
    return np.repeat(lrs / lrs.sum(), store.dim)
