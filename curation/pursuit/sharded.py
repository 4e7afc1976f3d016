"""``sharded_pursuit``: the full passes of the pursuit loop run per row shard, in this process
or on a Dask cluster whose workers hold their shards in memory across passes, and the shards'
winners are merged as one pass would give.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from curation.pursuit.atoms import AtomPart, Atoms, AtomSource, MappedRows
from curation.pursuit.driver import (
    _SEARCH_CANDIDATES,
    PursuitResult,
    check_count,
    check_search,
    index_search,
    pursue,
    searched_pass,
    stop_threshold,
    validate,
)
from curation.pursuit.passes import PassResult, atom_norms, inverse_norms, pass_result, score_all


def sharded_pursuit(atoms: Atoms, target: np.ndarray, k: int, *, shards: int, scheduler=None,
                    nonnegative: bool = True, tol: float = 1e-6, block_rows: int = 65536,
                    normalize: bool = True, column_scale: np.ndarray | None = None,
                    refresh: int = 1, search: str = "exact",
                    candidates: int = _SEARCH_CANDIDATES) -> PursuitResult:
    """``pursuit`` with the rows cut into ``shards`` ranges that are scored separately.

    Hierarchical: every full pass scores each shard against the residual and takes its winners
    (its best row and, with ``refresh > 1``, its 2048 best candidates); this process merges
    them, picks, refits and takes the lazy steps over the merged candidates. The merge keeps
    ``pursuit``'s order and tie rules, so the result is identical to ``pursuit`` with the same
    options, for any number of shards or workers. With ``refresh=R`` a pass is needed about
    every R steps, not every step.

    ``scheduler=None`` scores the shards one after another in this process; a Dask scheduler
    address or a ``distributed.Client`` scores them on that cluster (same result). There the
    shards are dealt out, contiguously, to one holder per worker (a Dask actor pinned to it)
    that reads its rows into memory once and keeps them for the whole pursuit: a pass is then
    one call per worker, straight to the worker (the scheduler is not involved), carrying the
    residual and the few excluded rows of its range out and one merged result back. Each
    worker scores with as many threads as it declares. So the cluster's memory must hold the
    atoms once (each worker its share) and the workers must read the rows' files: pass
    file-backed atoms as ``MappedRows`` at a path the workers can read (a memory map would be
    copied). Row data for the refit and the lazy candidates is read here, at most 2048 rows
    per pass.

    ``search`` (``"faiss"``): each holder builds the backend's index over the rows it holds and
    keeps it; a step sends the residual out and each holder returns its best candidate,
    re-scored exactly from its rows, with ``pursuit``'s exact checks and fallback (exact passes
    over the shards). Approximate, as in ``pursuit``; the holders' indexes are not the
    whole-store index, so the picks may differ from ``pursuit(search=...)``'s.
    """
    from curation.search import search_backend  # faiss loads only when asked for

    src, b, scale = validate(atoms, target, k, tol, block_rows, column_scale, refresh)
    backend = search_backend(search)
    if not backend.exhaustive:
        check_search(search, refresh, candidates)
    check_count("shards", shards)
    if shards > src.n:
        raise ValueError(f"shards={shards} exceeds the number of atoms n={src.n}")
    bounds = np.linspace(0, src.n, shards + 1).round().astype(np.int64)
    pieces = src.split(bounds)
    sq = np.ones(src.d) if scale is None else scale * scale
    with _runner(scheduler, pieces, bounds, sq, block_rows) as runner:
        norms = runner.norms()
        inv_norms = inverse_norms(norms, normalize)
        runner.set_inverse_norms(inv_norms)
        full_pass, counts = runner.full_pass, {}
        if not backend.exhaustive:
            runner.build_index(search)
            threshold = stop_threshold(tol, b, normalize, norms)
            full_pass = searched_pass(runner.search_best, src.n, int(candidates), threshold,
                                      runner.full_pass, counts)
        result = pursue(src, inv_norms, float(norms.max()), full_pass, b, int(k), nonnegative,
                        tol, normalize, scale, refresh)
        return replace(result, search_info=counts) if counts else result


def _rows_in(mask: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows of ``mask[lo:hi]`` that are set, relative to ``lo`` (a short list, not the mask)."""
    return np.flatnonzero(mask[lo:hi])


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


def _merge_best(bests: list[PassResult | None], edges: np.ndarray, signed: bool
                ) -> PassResult | None:
    """The best of the holders' searched candidates (rows relative to each holder's first
    row, at ``edges``), ties to the lower row; None if no holder had one."""
    best, best_key = None, -np.inf
    for found, lo in zip(bests, edges[:-1], strict=True):
        if found is None:
            continue
        key = abs(found.score) if signed else found.score
        if key > best_key:
            best, best_key = PassResult(int(lo + found.j), found.score), key
    return best


class ShardHolder:
    """Consecutive shards (rows ``[bounds[0], bounds[-1])``) held in memory, scored on request.

    In this process it reads the rows per pass, as ``pursuit`` does; as a Dask actor
    (``resident=True``) it copies them into memory once, so passes read no files, and scores
    with ``threads`` Numba threads (the worker's share of the cores).
    """

    def __init__(self, pieces: list[list[AtomPart]], bounds: np.ndarray, sq: np.ndarray,
                 block_rows: int, resident: bool = False, threads: int | None = None) -> None:
        if resident:
            pieces = [[np.array(p.open() if isinstance(p, MappedRows) else p) for p in shard]
                      for shard in pieces]
        self.sources = [AtomSource(shard) for shard in pieces]
        self.bounds = np.asarray(bounds, np.int64) - int(bounds[0])
        self.sq, self.block_rows, self.threads = sq, block_rows, threads
        self.inv_norms: list[np.ndarray] = []
        self.scores = [np.empty(s.n) for s in self.sources]
        self.search_best = None  # set by ``build_index``

    def _use_threads(self) -> None:
        # Numba's thread count is per calling thread: set it in the thread that scores.
        if self.threads is not None:
            import numba

            numba.set_num_threads(max(1, min(self.threads, numba.config.NUMBA_NUM_THREADS)))

    def norms(self) -> np.ndarray:
        """The scaled norms of the held rows."""
        self._use_threads()
        return np.concatenate([atom_norms(s, self.sq, self.block_rows) for s in self.sources])

    def set_inverse_norms(self, inv_norms: np.ndarray) -> None:
        self.inv_norms = [inv_norms[lo:hi] for lo, hi in zip(self.bounds[:-1], self.bounds[1:],
                                                              strict=True)]

    def build_index(self, search: str) -> None:
        """Build ``search``'s index over the held rows (kept for the pursuit's steps)."""
        from curation.search import search_backend

        rows = AtomSource([p for src in self.sources for p in src.parts])
        index = search_backend(search).build(rows, normalize=True)
        self.search_best = index_search(rows, index, np.concatenate(self.inv_norms))

    def search(self, r: np.ndarray, excluded: np.ndarray, signed: bool, m: int
               ) -> PassResult | None:
        """The best admissible of the index's candidates for ``r``; rows (``excluded`` too)
        relative to the first held row."""
        self._use_threads()
        return self.search_best(r, _mask(excluded, int(self.bounds[-1])), signed, m)

    def full_pass(self, r: np.ndarray, excluded: np.ndarray, banned: np.ndarray, signed: bool,
                  m: int) -> PassResult:
        """One pass over the held rows; ``excluded`` and ``banned`` list rows relative to the
        first held row; the result is relative to it too."""
        self._use_threads()
        n = int(self.bounds[-1])
        excluded, banned = _mask(excluded, n), _mask(banned, n)
        passes = []
        for src, inv, scores, lo, hi in zip(self.sources, self.inv_norms, self.scores,
                                            self.bounds[:-1], self.bounds[1:], strict=True):
            score_all(src, r, inv, self.block_rows, scores)
            passes.append(pass_result(scores, excluded[lo:hi], banned[lo:hi], signed, m))
        return _merge(passes, self.bounds, signed, m)


class _InProcess:
    """All shards in one holder here, rows read per pass."""

    def __init__(self, pieces: list[list[AtomPart]], bounds: np.ndarray, sq: np.ndarray,
                 block_rows: int) -> None:
        self.holder = ShardHolder(pieces, bounds, sq, block_rows)

    def norms(self) -> np.ndarray:
        return self.holder.norms()

    def set_inverse_norms(self, inv_norms: np.ndarray) -> None:
        self.holder.set_inverse_norms(inv_norms)

    def full_pass(self, r, excluded, banned, signed, m) -> PassResult:
        return self.holder.full_pass(r, np.flatnonzero(excluded), np.flatnonzero(banned),
                                     signed, m)

    def build_index(self, search: str) -> None:
        self.holder.build_index(search)

    def search_best(self, r, excluded, signed, m) -> PassResult | None:
        return self.holder.search(r, np.flatnonzero(excluded), signed, m)


class _OnDask:
    """One ``ShardHolder`` actor per worker, each holding a contiguous run of shards."""

    def __init__(self, client, pieces: list[list[AtomPart]], bounds: np.ndarray, sq: np.ndarray,
                 block_rows: int) -> None:
        workers = client.nthreads()
        if not workers:
            client.wait_for_workers(1)
            workers = client.nthreads()
        names = sorted(workers)[:len(pieces)]
        owner = np.arange(len(pieces)) * len(names) // len(pieces)  # contiguous runs
        self.edges = np.array([bounds[np.flatnonzero(owner == w)[0]] for w in range(len(names))]
                              + [bounds[-1]], np.int64)
        self.holders = []
        for w, name in enumerate(names):
            mine = np.flatnonzero(owner == w)
            held = [[client.scatter(p, workers=[name]) if isinstance(p, np.ndarray) else p
                     for p in pieces[s]] for s in mine]
            self.holders.append(client.submit(
                ShardHolder, held, bounds[mine[0]:mine[-1] + 2], sq, block_rows, resident=True,
                threads=workers[name], actor=True, workers=[name], allow_other_workers=False,
                pure=False))
        self.holders = [future.result() for future in self.holders]

    def norms(self) -> np.ndarray:
        return np.concatenate([call.result() for call in [h.norms() for h in self.holders]])

    def set_inverse_norms(self, inv_norms: np.ndarray) -> None:
        calls = [h.set_inverse_norms(inv_norms[lo:hi])
                 for h, lo, hi in zip(self.holders, self.edges[:-1], self.edges[1:], strict=True)]
        for call in calls:
            call.result()

    def full_pass(self, r, excluded, banned, signed, m) -> PassResult:
        calls = [h.full_pass(r, _rows_in(excluded, lo, hi), _rows_in(banned, lo, hi), signed, m)
                 for h, lo, hi in zip(self.holders, self.edges[:-1], self.edges[1:], strict=True)]
        return _merge([call.result() for call in calls], self.edges, signed, m)

    def build_index(self, search: str) -> None:
        for call in [h.build_index(search) for h in self.holders]:
            call.result()

    def search_best(self, r, excluded, signed, m) -> PassResult | None:
        calls = [h.search(r, _rows_in(excluded, lo, hi), signed, m)
                 for h, lo, hi in zip(self.holders, self.edges[:-1], self.edges[1:], strict=True)]
        return _merge_best([call.result() for call in calls], self.edges, signed)


@contextmanager
def _runner(scheduler, pieces: list[list[AtomPart]], bounds: np.ndarray, sq: np.ndarray,
            block_rows: int):
    if scheduler is None:
        yield _InProcess(pieces, bounds, sq, block_rows)
        return
    if any(isinstance(piece, np.memmap) for shard in pieces for piece in shard):
        raise ValueError("np.memmap atoms would be copied to the Dask workers; pass "
                         "MappedRows(path) so that each worker maps the file itself")
    from distributed import Client

    if isinstance(scheduler, Client):
        # The actors' handles find their client as the current one.
        with scheduler.as_current():
            yield _OnDask(scheduler, pieces, bounds, sq, block_rows)
        return
    # direct_to_workers: a pass's calls go to the workers, not through the scheduler
    with Client(scheduler, set_as_default=False, direct_to_workers=True) as client, \
            client.as_current():
        yield _OnDask(client, pieces, bounds, sq, block_rows)
