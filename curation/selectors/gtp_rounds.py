"""Pursuit in rounds: fresh non-negative pursuits toward one target, each over the pool rows
no earlier round picked, until the budget is spent.

One pursuit stops early when the residual has no positive correlation left with any atom (the
budget nears the effective rank of the trajectories). A new round over the rows not yet picked
starts again from the whole target, so the rest of the budget is spent on a second (third, ...)
non-negative reconstruction of it, not on cosine top-k. Every round's weights are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from curation.pursuit import MappedRows, PursuitResult

# ``run(atoms, target, k)``: one pursuit (in process or sharded) with the selector's options.
RunPursuit = Callable[[list, np.ndarray, int], PursuitResult]


@dataclass
class RoundsResult:
    """Picks (pool rows) in order, their weights and pick-time scores, and one record per round:
    how many rows it picked and its final residual relative to the target's norm."""

    indices: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    passes: int = 0


def pursue_rounds(atoms: list[MappedRows], target: np.ndarray, k: int, run: RunPursuit,
                  max_rounds: int = 0, taken: np.ndarray | None = None,
                  into: RoundsResult | None = None) -> RoundsResult:
    """Up to ``k`` rows of ``atoms`` in rounds toward ``target`` (``max_rounds=0``: until ``k``).

    ``taken`` (bool per row) marks rows no round may pick (updated in place); results are
    appended to ``into``. Stops early when a round finds no positively correlated row.
    """
    out = into if into is not None else RoundsResult()
    n = sum(_rows(part) for part in atoms)
    taken = np.zeros(n, bool) if taken is None else taken
    norm = max(float(np.linalg.norm(target)), 1e-12)
    want = len(out.indices) + k
    while len(out.indices) < want and (max_rounds == 0 or len(out.rounds) < max_rounds):
        parts, rows = unpicked(atoms, taken)
        if len(rows) == 0:
            break
        result = run(parts, target, min(want - len(out.indices), len(rows)))
        out.passes += int(result.passes)
        if len(result.indices) == 0:
            break
        picked = rows[np.asarray(result.indices, np.int64)]
        taken[picked] = True
        out.indices.extend(int(i) for i in picked)
        out.weights.extend(float(w) for w in result.weights)
        out.scores.extend(float(s) for s in result.correlations)
        out.rounds.append({"picks": len(picked),
                           "relative_residual": float(result.residual_norms[-1]) / norm})
    return out


def unpicked(atoms: list[MappedRows], taken: np.ndarray) -> tuple[list[MappedRows], np.ndarray]:
    """The rows not ``taken`` as contiguous ``MappedRows`` runs (no data read) and their pool
    row numbers."""
    parts, offset = [], 0
    for part in atoms:
        start = part.start
        count = _rows(part)
        free = ~taken[offset:offset + count]
        # runs of free rows: where free switches on and off
        edges = np.flatnonzero(np.diff(np.concatenate([[False], free, [False]]).astype(np.int8)))
        for lo, hi in zip(edges[::2], edges[1::2], strict=True):
            parts.append(MappedRows(part.path, start + int(lo), start + int(hi)))
        offset += count
    return parts, np.flatnonzero(~taken).astype(np.int64)


def _rows(part: MappedRows) -> int:
    return len(part.open())
