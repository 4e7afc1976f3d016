"""LESS top-k: rank pool examples by gradient cosine similarity to the target examples.

score(i) = reduce_j  sum_c  w_c * cos(g_ic, t_jc), with w_c the checkpoint learning rates
normalized to sum to one, ``reduce`` = max (default) or mean over target examples j; then the
k highest scores. Pool features are Adam-aware by default (as published), target features
plain gradients.

The sum over checkpoints is one inner product, <concat_c w_c u(g_ic), concat_c u(t_jc)> with
u the unit vector, so ``max`` over target examples is a top-1 inner-product search: faiss
``IndexFlatIP`` over the target rows (exact) up to ``_EXACT_TARGETS`` of them, past that the
subspace-split index (``curation.search``, backend ``faiss``) whose ``_RESCORED`` best rows per
list and pool row are re-scored exactly. ``mean`` is the inner product with the mean target row.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from curation.config import choice, config
from curation.gradients import FEATURE_KINDS
from curation.selectors.base import SelectionInputs, Selector, top_k

_REDUCERS = ("max", "mean")
# Target rows searched exhaustively: 65536 x 4 checkpoints x 1024 float32 is 1 GiB, and one pool
# block then costs as much as a dense product; past it the compressed index is cheaper.
_EXACT_TARGETS = 65536
_RESCORED = 16


@config("less")
class LessSelector(Selector):
    feature_kind: choice(FEATURE_KINDS) = Field(
        default="adam", description="Pool features: adam (Adam-aware, as published) or sgd.")
    reduce: choice(_REDUCERS) = Field(default="max", description="Over target examples: max or mean.")
    block_rows: int = Field(default=16384, gt=0, description="Pool rows scored per block (memory).")
    name = "less"
    needs = ("gradients", "target")

    def _select(self, inputs: SelectionInputs, k: int):
        scores = less_scores(inputs.pool_store(self.feature_kind).shards(),
                             inputs.target_store("sgd").shards(),
                             inputs.pool_store(self.feature_kind).checkpoint_lrs,
                             self.reduce, self.block_rows)
        indices = top_k(scores, k)
        return indices, np.ones(k), scores[indices], {}


def less_scores(pool_shards: list[np.ndarray], target_shards: list[np.ndarray],
                lrs: np.ndarray, reduce: str = "max", block_rows: int = 16384) -> np.ndarray:
    """LESS influence scores of every pool row, streamed over (rows, checkpoints, dim) shards."""
    target = _unit(np.concatenate([t.astype(np.float32) for t in target_shards]))
    target = np.ascontiguousarray(target.reshape(len(target), -1))
    weights = (lrs / lrs.sum()).astype(np.float32)
    best = _max_search(target) if reduce == "max" else None
    mean = target.mean(axis=0)
    scores = []
    for shard in pool_shards:
        for start in range(0, len(shard), block_rows):
            block = _unit(shard[start:start + block_rows].astype(np.float32))
            rows = np.ascontiguousarray((block * weights[:, None]).reshape(len(block), -1))
            scores.append(best(rows) if best is not None else rows @ mean)
    return np.concatenate(scores)


def _max_search(target: np.ndarray):
    """A function from pool rows to their largest inner product with a target row."""
    import faiss

    if len(target) <= _EXACT_TARGETS:
        index = faiss.IndexFlatIP(target.shape[1])
        index.add(target)
        return lambda rows: index.search(rows, 1)[0][:, 0]
    from curation.pursuit.atoms import AtomSource
    from curation.search import search_backend

    index = search_backend("faiss").build(AtomSource(target), normalize=False)

    def best(rows: np.ndarray) -> np.ndarray:
        found = index.candidates(rows, _RESCORED)
        out = np.full(len(rows), -np.inf, np.float32)
        for start in range(0, len(rows), 1024):  # bounded: 1024 x 16 candidate rows at a time
            f = found[start:start + 1024]
            sims = np.einsum("rd,rmd->rm", rows[start:start + 1024], target[np.maximum(f, 0)])
            out[start:start + 1024] = np.where(f >= 0, sims, -np.inf).max(axis=1)
        return out

    return best


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
