"""A full pass over the atoms, block by block: their norms, their scores against the residual,
and what a pass yields (the best row and, for lazy greedy, the best candidates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.pursuit.atoms import AtomSource
from curation.pursuit.kernels import norm_block, pick, score_block


def atom_norms(src: AtomSource, sq: np.ndarray, block_rows: int) -> np.ndarray:
    """sqrt(sum_j sq[j] * a_j^2) of every atom (inf/nan propagate)."""
    out = np.empty(src.n)
    for start, block in src.blocks(block_rows):
        norm_block(block, src.half, sq, out[start:start + len(block)])
    return out


def inverse_norms(norms: np.ndarray, normalize: bool) -> np.ndarray:
    """Score scale per atom: 1/||a|| (or 1 without ``normalize``), 0 for zero atoms; an error
    naming the first row with NaN or inf."""
    if not np.isfinite(norms).all():
        bad = int(np.flatnonzero(~np.isfinite(norms))[0])
        raise ValueError(f"atoms contain NaN or inf (first in row {bad})")
    inv = np.zeros(len(norms))
    positive = norms > 0
    inv[positive] = 1.0 / norms[positive] if normalize else 1.0
    return inv


def score_all(src: AtomSource, r: np.ndarray, inv_norms: np.ndarray, block_rows: int,
              out: np.ndarray) -> np.ndarray:
    """``score_block`` of every atom into ``out``, block by block; returns ``out``."""
    for start, block in src.blocks(block_rows):
        stop = start + len(block)
        score_block(block, src.half, r, inv_norms[start:stop], out[start:stop])
    return out


def _candidates(scores: np.ndarray, banned: np.ndarray, signed: bool, m: int
                ) -> tuple[np.ndarray, float]:
    """The ``m`` best non-banned rows (ascending; ties to lower rows) and the best key left out."""
    key = np.abs(scores) if signed else scores.copy()
    key[banned] = -np.inf
    n = len(key)
    if m >= n:
        return np.flatnonzero(~banned), -np.inf
    kth = np.partition(key, n - m)[n - m]  # the m-th largest key
    if kth == -np.inf:
        return np.flatnonzero(~banned), -np.inf
    above = np.flatnonzero(key > kth)
    ties = np.flatnonzero(key == kth)[: m - len(above)]
    chosen = np.sort(np.concatenate([above, ties]))
    key[chosen] = -np.inf
    return chosen, float(key.max())


@dataclass(frozen=True)
class PassResult:
    """What a full pass over the atoms yields: the best non-excluded row ``j`` (-1 if none) and
    its score; when candidates were asked for, the best non-banned rows (ascending), their keys
    and the best key left out."""

    j: int
    score: float
    cand: np.ndarray | None = None
    cand_keys: np.ndarray | None = None
    left_out: float = -np.inf


def pass_result(scores: np.ndarray, excluded: np.ndarray, banned: np.ndarray, signed: bool,
                m: int) -> PassResult:
    """The ``PassResult`` of a pass that scored every row; ``m`` candidates (none if 0)."""
    j = pick(scores, excluded, signed)
    score = float(scores[j]) if j >= 0 else 0.0
    if not m:
        return PassResult(j, score)
    cand, left_out = _candidates(scores, banned, signed, m)
    keys = np.abs(scores[cand]) if signed else scores[cand]
    return PassResult(j, score, cand, keys, left_out)
