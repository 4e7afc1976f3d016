"""GTP's pursuit targets from a target gradient store: one mean trajectory, the means of
clusters of target trajectories, the mean of each target class, or every target example; each
with its share of the budget.
"""

from __future__ import annotations

import numpy as np

from curation.datastore import GradientStore

TARGETS = ("auto", "mean", "clusters", "classes", "examples")


def target_trajectories(store: GradientStore, kind: str, clusters: int, seed: int,
                        scale: np.ndarray | None = None, labels: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(targets (m, checkpoints * dim), shares (m,) summing to one): the budget share of each
    target is the fraction of target examples it stands for.

    ``mean``: the mean trajectory. ``clusters``: k-means (``clusters`` groups, seeded) of the
    target trajectories, scaled by ``scale`` and normalised to unit length so that clusters
    follow direction, not gradient size; each target is its cluster's mean. ``classes``: the
    mean of each class of the target's ``labels``, in ``target_classes`` order. ``examples``:
    each target trajectory on its own.
    """
    rows = np.concatenate([s.astype(np.float64).reshape(len(s), -1) for s in store.shards()])
    if scale is not None:
        rows = rows * scale
    if kind == "mean" or len(rows) == 1:
        return rows.mean(axis=0, keepdims=True), np.ones(1)
    if kind == "classes":
        classes = target_classes(labels)
        return (np.stack([rows[labels == c].mean(axis=0) for c in classes]),
                np.array([np.mean(labels == c) for c in classes]))
    if kind == "examples":
        return rows, np.full(len(rows), 1.0 / len(rows))
    if kind != "clusters":
        raise ValueError(f"unknown target kind {kind!r}; expected one of {TARGETS}")
    from sklearn.cluster import KMeans

    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    m = min(clusters, len(rows))
    labels = KMeans(n_clusters=m, n_init=4, random_state=seed).fit_predict(unit)
    groups = [np.flatnonzero(labels == c) for c in range(m)]
    groups = [g for g in groups if len(g)]
    targets = np.stack([rows[g].mean(axis=0) for g in groups])
    shares = np.array([len(g) for g in groups], np.float64) / len(rows)
    return targets, shares


def target_classes(labels: np.ndarray | None) -> np.ndarray:
    """The classes present in the target's labels, ascending (the order of ``classes``
    targets)."""
    if labels is None:
        raise ValueError("target='classes' needs the target's labels")
    return np.unique(labels)


def split_budget(k: int, shares: np.ndarray) -> np.ndarray:
    """``k`` split by ``shares`` with the largest-remainder rule (ties to the lower index)."""
    exact = k * np.asarray(shares, np.float64) / shares.sum()
    counts = np.floor(exact).astype(np.int64)
    rest = k - int(counts.sum())
    order = np.lexsort((np.arange(len(exact)), -(exact - counts)))
    counts[order[:rest]] += 1
    return counts
