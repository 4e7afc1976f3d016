"""Pursuit in rounds: fresh non-negative pursuits toward one target, each over the pool rows
no earlier round picked, until the budget is spent.

One pursuit stops early when the residual has no positive correlation left with any atom (the
budget nears the effective rank of the trajectories). A new round over the rows not yet picked
starts again from the whole target, so the rest of the budget is spent on a second (third, ...)
non-negative reconstruction of it, not on cosine top-k. Every round's weights are kept.

``round_size`` caps the picks of one round, so the budget is spent on several coarse
reconstructions of the target rather than one fine one. ``max_cosine`` is the near-duplicate
guard: within one pursuit a copy of a pick has no correlation left with the residual, but a
fresh round (or another target's pursuit) starts from the whole target again and would pick the
copy; so before each round every free row whose cosine to a pick exceeds ``max_cosine`` is
excluded, and a pick of the round itself that exceeds it against an earlier pick is dropped
(its weight with it) and excluded. A ``Guard`` holds the rows the cosines are taken on and the
threshold: the trajectories (``max_cosine``) or the pool's input features
(``max_input_cosine``), which also catch a copy whose flipped label sends its gradient
elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from curation.pursuit import MappedRows, PursuitResult
from curation.pursuit.atoms import AtomSource

# ``run(atoms, target, k, taken)``: one pursuit with the selector's options over the rows of
# ``atoms`` not ``taken``, its indices in pool row numbers (``over_unpicked`` makes one from a
# pursuit over row runs; an index-searched pursuit masks the rows instead).
RunPursuit = Callable[[list, np.ndarray, int, np.ndarray], PursuitResult]
PursueRows = Callable[[list, np.ndarray, int], PursuitResult]


@dataclass(frozen=True)
class Guard:
    """A near-duplicate guard: cosines over ``rows`` (times ``scale``) above ``max_cosine``;
    ``rows`` are atom parts as ``AtomSource`` reads them (``MappedRows`` or arrays)."""

    rows: list
    max_cosine: float
    scale: np.ndarray | None = None


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
                  into: RoundsResult | None = None, round_size: int = 0,
                  guards: tuple[Guard, ...] = ()) -> RoundsResult:
    """Up to ``k`` rows of ``atoms`` in rounds toward ``target`` (``max_rounds=0``: until ``k``).

    ``taken`` (bool per row) marks rows no round may pick (updated in place, near-duplicates
    excluded by the guard included); results are appended to ``into``. ``round_size`` (0: no
    cap) is the most picks per round; ``guards`` the near-duplicate guards (a row is excluded
    when any guard finds it too close to a pick). Stops early when a round finds no positively
    correlated row.
    """
    out = into if into is not None else RoundsResult()
    n = sum(_rows(part) for part in atoms)
    taken = np.zeros(n, bool) if taken is None else taken
    norm = max(float(np.linalg.norm(target)), 1e-12)
    want = len(out.indices) + k
    guards = tuple(g for g in guards if g.max_cosine < 1.0)
    while len(out.indices) < want and (max_rounds == 0 or len(out.rounds) < max_rounds):
        for guard in guards if out.indices else ():
            taken |= near_duplicates(guard.rows, np.asarray(out.indices), ~taken,
                                     guard.max_cosine, guard.scale)
        free = int((~taken).sum())
        if free == 0:
            break
        size = min(want - len(out.indices), free)
        result = run(atoms, target, min(size, round_size) if round_size else size, taken)
        out.passes += int(result.passes)
        if len(result.indices) == 0:
            break
        picked = np.asarray(result.indices, np.int64)
        taken[picked] = True
        keep = _first_of_near_duplicates(guards, picked)
        out.indices.extend(int(i) for i in picked[keep])
        out.weights.extend(float(w) for w in np.asarray(result.weights)[keep])
        out.scores.extend(float(s) for s in np.asarray(result.correlations)[keep])
        out.rounds.append({"picks": int(keep.sum()),
                           "relative_residual": float(result.residual_norms[-1]) / norm})
    return out


def over_unpicked(pursue_rows: PursueRows) -> RunPursuit:
    """A ``RunPursuit`` that runs ``pursue_rows`` over the runs of rows not taken (no data
    read to cut them) and maps its picks back to pool row numbers."""
    def run(atoms: list, target: np.ndarray, k: int, taken: np.ndarray) -> PursuitResult:
        parts, rows = unpicked(atoms, taken)
        result = pursue_rows(parts, target, k)
        return replace(result, indices=rows[np.asarray(result.indices, np.int64)])
    return run


def near_duplicates(atoms: list, picked: np.ndarray, candidates: np.ndarray,
                    max_cosine: float, scale: np.ndarray | None = None) -> np.ndarray:
    """Bool per row: a ``candidates`` row whose cosine to a ``picked`` row exceeds
    ``max_cosine`` (rows times ``scale``), read block by block."""
    ref = _unit(read_rows(atoms, picked), scale)
    out = np.zeros(len(candidates), bool)
    source = AtomSource(atoms)
    for lo, block in source.blocks(8192):
        mask = candidates[lo:lo + len(block)]
        if mask.any():
            rows = block.view(np.float16) if source.half else block  # blocks give float16 bits
            out[np.flatnonzero(mask) + lo] = (_unit(rows[mask], scale) @ ref.T).max(axis=1) \
                > max_cosine
    return out


def _first_of_near_duplicates(guards: tuple[Guard, ...], picked: np.ndarray) -> np.ndarray:
    """Bool per pick (in pick order): False where any guard finds it too close to an earlier
    kept pick."""
    close = np.zeros((len(picked), len(picked)), bool)
    for guard in guards:
        unit = _unit(read_rows(guard.rows, picked), guard.scale)
        close |= unit @ unit.T > guard.max_cosine
    keep = np.ones(len(picked), bool)
    for i in range(1, len(picked)):
        keep[i] = not close[i, :i][keep[:i]].any()
    return keep


def read_rows(atoms: list, rows: np.ndarray) -> np.ndarray:
    """The given pool rows (any order) of ``atoms`` as float32, in that order."""
    rows = np.asarray(rows, np.int64)
    if not len(rows):
        raise ValueError("no rows to read")
    source, order = AtomSource(atoms), np.argsort(rows)
    out = np.empty((len(rows), source.d), np.float32)
    out[order] = source.rows(rows[order])
    return out


def _unit(rows: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    rows = rows.astype(np.float32) * (1.0 if scale is None else scale.astype(np.float32))
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


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
