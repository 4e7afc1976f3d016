"""LESS top-k: rank pool examples by gradient cosine similarity to the target examples.

score(i) = reduce_j  sum_c  w_c * cos(g_ic, t_jc), with w_c the checkpoint learning rates
normalized to sum to one, ``reduce`` = max (default) or mean over target examples j; then the
k highest scores. Pool features are Adam-aware by default (as published), target features
plain gradients.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from curation.config import choice, config
from curation.gradients import FEATURE_KINDS
from curation.selectors.base import SelectionInputs, Selector, top_k

_REDUCERS = ("max", "mean")


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
    weights = (lrs / lrs.sum()).astype(np.float32)
    scores = []
    for shard in pool_shards:
        for start in range(0, len(shard), block_rows):
            block = _unit(shard[start:start + block_rows].astype(np.float32))
            # (rows, targets): learning-rate weighted sum of per-checkpoint cosines.
            sims = np.einsum("rcd,tcd,c->rt", block, target, weights, optimize=True)
            scores.append(sims.max(axis=1) if reduce == "max" else sims.mean(axis=1))
    return np.concatenate(scores)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
