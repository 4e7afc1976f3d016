"""``sharded_pursuit``: the full passes of the pursuit loop run as one task per row shard, in
this process or on a Dask cluster, and the shards' winners are merged as one pass would give.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from curation.pursuit.atoms import AtomPart, Atoms, AtomSource
from curation.pursuit.driver import PursuitResult, check_count, pursue, validate
from curation.pursuit.passes import PassResult, atom_norms, inverse_norms, pass_result, score_all


def sharded_pursuit(atoms: Atoms, target: np.ndarray, k: int, *, shards: int, scheduler=None,
                    nonnegative: bool = True, tol: float = 1e-6, block_rows: int = 65536,
                    normalize: bool = True, column_scale: np.ndarray | None = None,
                    refresh: int = 1) -> PursuitResult:
    """``pursuit`` with the rows cut into ``shards`` ranges that are scored as separate tasks.

    Hierarchical: every full pass is one task per shard, which scores its rows against the
    residual and returns its winners (its best row and, with ``refresh > 1``, its 2048 best
    candidates); this process merges them, picks, refits and takes the lazy steps over the
    merged candidates. The merge keeps ``pursuit``'s order and tie rules, so the result is
    identical to ``pursuit`` with the same options, for any number of shards. With
    ``refresh=R`` a pass (a round of tasks) is needed about every R steps, not every step.

    ``scheduler=None`` runs the tasks one after another in this process; a Dask scheduler
    address or a ``distributed.Client`` runs them on that cluster (same result). Tasks receive
    their rows' locations, not the data: pass file-backed atoms as ``MappedRows`` at a path the
    workers can read (a memory map would be copied); row data for the refit and the lazy
    candidates is read here, at most 2048 rows per pass.
    """
    src, b, scale = validate(atoms, target, k, tol, block_rows, column_scale, refresh)
    check_count("shards", shards)
    if shards > src.n:
        raise ValueError(f"shards={shards} exceeds the number of atoms n={src.n}")
    bounds = np.linspace(0, src.n, shards + 1).round().astype(np.int64)
    pieces = src.split(bounds)
    sq = np.ones(src.d) if scale is None else scale * scale
    with _runner(scheduler, pieces) as runner:
        parts = [[runner.put(piece) for piece in shard] for shard in pieces]
        norms = np.concatenate(runner.map(_shard_norms, [(p, sq, block_rows) for p in parts]))
        inv_norms = inverse_norms(norms, normalize)
        inv_parts = [runner.put(inv_norms[lo:hi])
                     for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

        def full_pass(rs, excluded, banned, signed, m):
            tasks = [(part, inv, rs, _rows_in(excluded, lo, hi), _rows_in(banned, lo, hi),
                      signed, m, block_rows)
                     for part, inv, lo, hi in zip(parts, inv_parts, bounds[:-1], bounds[1:],
                                                  strict=True)]
            return _merge(runner.map(_shard_pass, tasks), bounds, signed, m)

        return pursue(src, inv_norms, float(norms.max()), full_pass, b, int(k), nonnegative,
                      tol, normalize, scale, refresh)


def _rows_in(mask: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows of ``mask[lo:hi]`` that are set, relative to ``lo`` (a short list, not the mask)."""
    return np.flatnonzero(mask[lo:hi])


def _shard_norms(pieces: list[AtomPart], sq: np.ndarray, block_rows: int) -> np.ndarray:
    """Task: the scaled norms of a shard's rows."""
    return atom_norms(AtomSource(pieces), sq, block_rows)


def _shard_pass(pieces: list[AtomPart], inv_norms: np.ndarray, r: np.ndarray,
                excluded: np.ndarray, banned: np.ndarray, signed: bool, m: int,
                block_rows: int) -> PassResult:
    """Task: one full pass over a shard (rows relative to the shard)."""
    src = AtomSource(pieces)
    scores = score_all(src, r, inv_norms, block_rows, np.empty(src.n))
    return pass_result(scores, _mask(excluded, src.n), _mask(banned, src.n), signed, m)


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    mask[rows] = True
    return mask


def _merge(passes: list[PassResult], bounds: np.ndarray, signed: bool, m: int) -> PassResult:
    """One ``PassResult`` over all rows from the shards' passes, as ``pass_result`` would give."""
    j, score, best = -1, 0.0, -np.inf
    for p, lo in zip(passes, bounds[:-1], strict=True):
        key = abs(p.score) if signed else p.score
        if p.j >= 0 and key > best:  # strictly: ties go to the lower (earlier) row
            j, score, best = int(lo + p.j), p.score, key
    if not m:
        return PassResult(j, score)
    rows = np.concatenate([lo + p.cand for p, lo in zip(passes, bounds[:-1], strict=True)])
    keys = np.concatenate([p.cand_keys for p in passes])
    order = np.lexsort((rows, -keys))  # highest keys first, lower rows on ties
    chosen, rest = order[:m], order[m:]
    left_outs = [p.left_out for p in passes]
    if len(rest):
        left_outs.append(float(keys[rest].max()))
    keep = np.sort(chosen)
    return PassResult(j, score, rows[keep], keys[keep], max(left_outs))


class _InProcess:
    """Runs shard tasks one after another here."""

    @staticmethod
    def put(value):
        return value

    @staticmethod
    def map(fn, tasks: list) -> list:
        return [fn(*task) for task in tasks]


class _OnDask:
    """Runs shard tasks on a Dask cluster; data used by every pass is sent once."""

    def __init__(self, client) -> None:
        self.client = client

    def put(self, value):
        return self.client.scatter(value) if isinstance(value, np.ndarray) else value

    def map(self, fn, tasks: list) -> list:
        return self.client.gather([self.client.submit(fn, *task, pure=False) for task in tasks])


@contextmanager
def _runner(scheduler, pieces: list[list[AtomPart]]):
    if scheduler is None:
        yield _InProcess()
        return
    if any(isinstance(piece, np.memmap) for shard in pieces for piece in shard):
        raise ValueError("np.memmap atoms would be copied to the Dask workers; pass "
                         "MappedRows(path) so that each worker maps the file itself")
    from distributed import Client

    if isinstance(scheduler, Client):
        yield _OnDask(scheduler)
        return
    with Client(scheduler, set_as_default=False) as client:
        yield _OnDask(client)
