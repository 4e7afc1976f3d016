"""Gradient Trajectory Pursuit (GTP): joint L0-budgeted selection by non-negative pursuit.

Atoms are pool gradient trajectories (per-checkpoint blocks concatenated, each scaled by a
checkpoint weight); the target is built from the target gradient trajectories
(``curation.selectors.gtp_targets``). Pursuit picks the atom most correlated with the residual,
refits non-negative weights on all picks, and repeats, so an example whose contribution is
already explained (a near-duplicate) is not picked again.

Rounds (``curation.selectors.gtp_rounds``): once a pursuit runs out of positive correlations
before the budget is spent, a fresh pursuit toward the same target runs over the examples not
yet picked, and so on until the budget is spent (``rounds=0``) or ``rounds`` rounds ran; every
round's weights are kept. ``info['rounds']`` holds each round's picks and final relative
residual. There is no cosine top-k fill: a round that finds no positively correlated example
ends the selection, which may then hold fewer than ``k`` examples.

``round_size`` caps one round's picks; ``max_cosine`` < 1 is a near-duplicate guard on the
trajectories (a row whose trajectory cosine to a pick exceeds it is never picked; see
``gtp_rounds``). Both are off by default: on MNIST capped rounds (1 to 10 picks) lost 5 to 26
points at 5-10%, and on noisy text the trajectory guard (0.9) cut redundant picks at 5% from 3
to 2 only (one seed, benchmarks/QUALITY.md): the two left are copies whose label was flipped,
with gradients pointing elsewhere (trajectory cosine below 0). ``max_input_cosine`` guards on
the pool's input features instead, which catches those, and is on by default where the proxy
reads float input features: unset, it starts at 0.7 and is relaxed (0.85, 0.925, 0.9625, 0.98)
while the budget is not spent, since on inputs that are all alike (8x8 digits: 45% of pairs
above 0.7) a few picks would exclude most of the pool. Measured at seed 0 (1 / 5 / 10%):
noisy text redundant picks 0 / 3 / 10 -> 0 / 0 / 0 at 0.7 and 0.85; on MNIST 0.7 gained
1.4 / 3.8 / 1.0 points over no guard (3 seeds), 0.85 only 0 / 0 / 1.9 and 0.6 lost at 10%;
on targeted and general text 0.7 moved no cell down (up to +1.4). ``info['max_input_cosine']``
lists the thresholds a selection used.

Targets: ``mean`` (one mean trajectory), ``clusters`` (k-means of the unit target trajectories;
one pursuit per cluster mean, the budget split by cluster size, each cluster's weights scaled
by its share), ``classes`` (one pursuit per target class toward its mean over the pool rows of
that class, the budget split by the target's label mix; needs labels of pool and target) or
``examples`` (one per target example). The default, ``auto``, is ``classes`` where pool and
target are labelled and the target holds at most half of the pool's classes (a labelled slice
of the pool), and ``clusters`` (8) otherwise (``info['target']`` says which ran). Clusters:
one mean is reconstructed by a handful of atoms and nothing asks the subset to cover the
target's distribution; measured on one seed (benchmarks/QUALITY.md, "How GTP's defaults were
chosen"), 8 clusters gained 1-2 points over the mean on general text and 8-11 points at 1% and
10% on MNIST; 16 clusters and one target per example were no better. Classes, 3 seeds with
the input guard on: on targeted text (4 of 20 classes) 0.849 / 0.898 / 0.918 against clusters'
0.843 / 0.885 / 0.876 at 1 / 5 / 10%, noisy text 0.838 / 0.870 / 0.906 against 0.837 / 0.871 /
0.849; where the target spans the pool's classes they lose (MNIST 10 of 10: 0.524 / 0.671 /
0.718 against 0.539 / 0.727 / 0.783; general text 18 of 20: 0.371 / 0.538 / 0.570 against
0.385 / 0.580 / 0.661): within a class the pursuit's picks are atypical ones.

The pool store's float16 shards are read in place (``GradientStore.atoms``: memory-mapped
per pass, see ``curation.pursuit.MappedRows``; a later round reads the rows not yet picked as
runs of them); no float32 copy of the store is made, for any checkpoint weighting: a weight
per checkpoint is a per-column scale of the atoms, applied inside the pursuit. Scale options:
``refresh > 1`` is the lazy-greedy pursuit (a full pass over the pool at most every
``refresh`` steps; approximate); ``shards > 1`` scores the pool in that many tasks per pass
(``curation.pursuit.sharded_pursuit``), on the Dask cluster at ``scheduler`` if one is given
(its workers must see the store's directory). Sharding and the scheduler change where the work
runs, not the selection, so ``scheduler`` is left out of the selector's config (and its hash);
``shards`` stays in it as a record of how the run was split.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from curation.config import choice, config
from curation.datastore import GradientStore
from curation.errors import CurationError
from curation.gradients import FEATURE_KINDS
from curation.search import SEARCH_BACKENDS
from curation.selectors.base import SelectionInputs, Selector
from curation.selectors.gtp_rounds import (
    Guard,
    RoundsResult,
    over_unpicked,
    pursue_rounds,
)
from curation.selectors.gtp_targets import (
    TARGETS,
    split_budget,
    target_classes,
    target_trajectories,
)

_CHECKPOINT_WEIGHTING = ("uniform", "lr")
# The unset input guard: 0.7 (measured on the four scenarios of ``make bench-quality``, module
# docstring), relaxed while the budget is not spent, for inputs that are all alike (8x8 digits:
# 45% of pairs above 0.7), where a few picks would exclude most of the pool; it never admits
# copies above 0.98.
DEFAULT_INPUT_COSINES = (0.7, 0.85, 0.925, 0.9625, 0.98)
_CHECKPOINT_NORM = ("none", "unit")


@config("gtp")
class GTPSelector(Selector):
    feature_kind: choice(FEATURE_KINDS) = Field(
        default="sgd", description="Pool features: sgd (plain gradients) or adam.")
    checkpoint_weighting: choice(_CHECKPOINT_WEIGHTING) = Field(
        default="uniform", description="Weight of each checkpoint: uniform, or lr (its learning rate).")
    checkpoint_norm: choice(_CHECKPOINT_NORM) = Field(
        default="none", description="Per-checkpoint normalisation before weighting: none, or "
                                    "unit (each checkpoint's pool gradients scaled to unit RMS "
                                    "norm).")
    target: choice(TARGETS) = Field(
        default="auto", description="Pursuit target: auto (classes when pool and target are "
                                    "labelled and the target holds at most half of the pool's "
                                    "classes, else clusters), mean (the mean target trajectory), "
                                    "clusters (k-means cluster means, budget split by size), "
                                    "classes (each target class's mean, budget split by the "
                                    "target's label mix, picks of that class only) or examples "
                                    "(every target example, budget split evenly).")
    clusters: int = Field(default=8, ge=1, strict=True,
                          description="Number of k-means clusters of target trajectories "
                                      "(target=clusters).")
    cluster_seed: int = Field(default=0, ge=0, strict=True,
                              description="Seed of the k-means of target trajectories.")
    rounds: int = Field(default=0, ge=0, strict=True,
                        description="Most pursuit rounds per target, each over the examples not "
                                    "yet picked (0: as many as the budget needs).")
    round_size: int = Field(default=0, ge=0, strict=True,
                            description="Most picks per pursuit round (0: no cap).")
    max_cosine: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False,
                              description="Near-duplicate guard: a row whose trajectory cosine "
                                          "to a pick exceeds this is not picked (1: off).")
    max_input_cosine: float | None = Field(
        default=None, gt=0, le=1, allow_inf_nan=False,
        description=f"Near-duplicate guard on the pool's input features: a row whose feature "
                    f"cosine to a pick exceeds this is not picked (1: off). Unset: "
                    f"{DEFAULT_INPUT_COSINES[0]}, relaxed up to {DEFAULT_INPUT_COSINES[-1]} "
                    f"while the budget is not spent, where the proxy reads float input "
                    f"features (a classifier proxy), off otherwise; a value needs them.")
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
                                     "(the store's inner-product index, or with shards one "
                                     "per shard holder; approximate).")
    name = "gtp"
    needs = ("gradients", "target")
    execution_only = ("scheduler",)

    def _select(self, inputs: SelectionInputs, k: int):
        # numba loads only when GTP runs
        from curation.pursuit import pursuit, sharded_pursuit

        store = inputs.pool_store(self.feature_kind)
        scale = checkpoint_scale(store, self.checkpoint_weighting, self.checkpoint_norm)
        atoms = store.atoms()
        target_store = inputs.target_store("sgd")
        target_kind = self._target_kind(inputs)
        pool_labels = target_labels = None
        if target_kind == "classes":
            pool_labels, target_labels = inputs.labels()
            if len(target_labels) != target_store.n or len(pool_labels) != store.n:
                raise CurationError("gtp target='classes': the labels do not match the "
                                    "gradient stores' rows")
        targets, shares = target_trajectories(target_store, target_kind, self.clusters,
                                              self.cluster_seed, scale, target_labels)
        classes = (target_classes(target_labels) if target_labels is not None
                   else [None] * len(targets))
        options = {"nonnegative": self.nonnegative, "tol": self.tol, "column_scale": scale,
                   "refresh": self.refresh}

        index = self._search_index(store)

        def pursue_rows(parts, target, budget):
            if self.shards > 1:
                n = sum(len(p.open()) for p in parts)
                return sharded_pursuit(parts, target, budget, shards=min(self.shards, n),
                                       scheduler=self.scheduler or None, search=self.search,
                                       **options)
            return pursuit(parts, target, budget, **options)

        def searched(atoms, target, budget, taken):
            # the index covers the whole store: every round, cluster and class searches it
            # with the rows it may not pick masked, in pool row numbers
            return pursuit(atoms, target, budget, search=self.search, index=index,
                           exclude=taken, **options)

        run = over_unpicked(pursue_rows) if index is None else searched
        result, thresholds = RoundsResult(), []
        trajectory_guard = Guard(atoms, self.max_cosine, scale)
        input_cosines = self._input_cosines(inputs)
        features = inputs.input_features() if min(input_cosines) < 1.0 else None
        for input_cosine in input_cosines:
            if len(result.indices) >= k:
                break
            guards = (trajectory_guard,)
            if input_cosine < 1.0:
                guards += (Guard([features], input_cosine),)
            thresholds.append(input_cosine)
            self._pursue_targets(atoms, store.n, targets, shares, classes, pool_labels,
                                 k - len(result.indices), run, guards, result)
        residuals = [r["relative_residual"] for r in result.rounds]
        return np.asarray(result.indices, np.int64), np.asarray(result.weights), \
            np.asarray(result.scores), {
                "n_pursuit": len(result.indices), "target": target_kind,
                "n_targets": len(targets),
                "n_rounds": len(result.rounds), "rounds": result.rounds,
                "relative_residual": float(residuals[0]) if residuals else 1.0,
                "passes": int(result.passes), "max_input_cosine": thresholds}

    def _pursue_targets(self, atoms: list, n: int, targets: list, shares: list,
                        classes: list, pool_labels: np.ndarray | None, k: int, run,
                        guards: tuple, result: RoundsResult) -> None:
        """Up to ``k`` more picks into ``result``, the budget split over the targets by share
        (a target that falls short passes the rest on to the next)."""
        taken = np.zeros(n, bool)
        taken[np.asarray(result.indices, np.int64)] = True
        carry = 0
        for target, share, budget, label in zip(targets, shares, split_budget(k, shares),
                                                classes, strict=True):
            before = len(result.indices)
            # a class's pursuit picks only pool rows of that class (GradMatch's per-class rule)
            off = taken if label is None else taken | (pool_labels != label)
            if budget + carry > 0:
                pursue_rounds(atoms, target, int(budget + carry), run, self.rounds, off, result,
                              self.round_size, guards)
            if label is not None:
                taken |= off & (pool_labels == label)
            got = len(result.indices) - before
            # weights of a per-cluster pursuit reconstruct its cluster mean: scaled by the
            # cluster's share they sum to a reconstruction of the overall mean
            result.weights[before:] = [w * share for w in result.weights[before:]]
            carry = int(budget + carry) - got

    def _target_kind(self, inputs: SelectionInputs) -> str:
        """``target``, with ``auto`` resolved: classes where the labelled target is a slice of
        the pool's classes (at most half of them), clusters otherwise."""
        if self.target != "auto":
            return self.target
        if inputs.split_labels is None:
            return "clusters"
        pool_labels, target_labels = inputs.labels()
        narrow = 2 * len(np.unique(target_labels)) <= len(np.unique(pool_labels))
        return "classes" if narrow else "clusters"

    def _input_cosines(self, inputs: SelectionInputs) -> list[float]:
        """The input guard's thresholds, tried in turn while the budget is not spent: the set
        value alone; unset, ``DEFAULT_INPUT_COSINES`` (0.7 relaxed step by step up to 0.98)
        where the proxy reads float input features, and off (1) where it does not."""
        if self.max_input_cosine is not None:
            return [self.max_input_cosine]
        if not inputs.has_input_features():
            return [1.0]
        return list(DEFAULT_INPUT_COSINES)

    def _search_index(self, store: GradientStore):
        """The store's search index for ``search``; None for exact search, and with shards
        (``sharded_pursuit`` indexes each holder's rows)."""
        if self.search == "exact":
            return None
        if self.refresh > 1:
            raise CurationError(f"gtp 'search': {self.search!r} searches at every step; set "
                                "refresh=1")
        if self.shards > 1:  # each shard holder builds and keeps an index over its rows
            return None
        from curation.datastore.index import store_index

        return store_index(store, self.search)


def checkpoint_scale(store: GradientStore, weighting: str, norm: str = "none"
                     ) -> np.ndarray | None:
    """Per-column scale of the trajectories, or None when every column keeps weight one.

    ``weighting``: uniform, or lr-proportional checkpoint weights (summing to one); ``norm``:
    none, or ``unit``: each checkpoint block divided by the RMS norm of the pool's gradients at
    that checkpoint (streamed by shard), so that no checkpoint dominates by gradient size.
    """
    weights = np.ones(store.checkpoints)
    if weighting == "lr":
        lrs = store.checkpoint_lrs
        weights = lrs / lrs.sum()
    if norm == "unit":
        squares = np.zeros(store.checkpoints)
        for shard in store.shards():
            squares += np.square(shard.astype(np.float64)).sum(axis=(0, 2))
        rms = np.sqrt(squares / max(store.n, 1))
        weights = weights / np.where(rms > 0, rms, 1.0)
    if weighting == "uniform" and norm == "none":
        return None
    return np.repeat(weights, store.dim)
