"""Non-negative orthogonal matching pursuit over a (possibly memory-mapped) atom matrix.

``pursuit(atoms, target, k)`` picks at most ``k`` rows of ``atoms`` (pool gradient vectors)
whose non-negative combination reconstructs ``target``. Each step:

1. Score every atom against the residual, ``c_i = <a_i, r> / ||a_i||`` (or ``<a_i, r>`` with
   ``normalize=False``), in row blocks of ``block_rows``, accumulating in float64.
2. Pick the best atom not in the active set (``argmax c``; ``argmax |c|`` when signed); ties go
   to the lowest row. Stop if the best score is ``<= tol * ||target||`` (times the largest atom
   norm when ``normalize=False``), so the threshold does not depend on the gradients' scale.
3. Refit the weights of the active atoms plus the new one by least squares: the exact NNLS
   solution on that small set (Lawson-Hanson, warm-started from the previous weights), or
   plain least squares when ``nonnegative=False``. Atoms whose weight hits zero leave the
   active set and go back to the pool; they may be picked again by a later step.
4. ``r = target - A_S^T w``. Stop when ``|S| == k`` or ``||r|| <= tol * ||target||``.

Why the loop is hand-written in Numba rather than calling ``scipy.optimize.nnls`` per step:
a from-scratch NNLS refit costs ``O(d |S|^2)`` or more every step, ``O(d k^3)`` in total. Here
the Cholesky factor of the active Gram matrix ``G = A_S A_S^T`` is updated incrementally
(a row appended per pick, a rank-one update per drop), so a refit is ``O(|S|^2)`` plus an
``O(d |S|)`` Gram column, and the pass over the atoms (``O(n d)``, parallel over rows) dominates.

float16 atoms (e.g. a float16 ``np.memmap`` larger than memory) are read as raw uint16 and
converted to float32 inside the kernel, bit-exactly; no float32 copy of the matrix or of a block
is made. Measured on one 20000 x 1024 pass (2 cores): 2.3-3 ms, against 48 ms converting blocks
with ``astype`` in Python and 7.5 ms through a 65536-entry lookup table; float32 input takes
2-2.8 ms. Blocks under ``_PARALLEL_MIN_SIZE`` elements are scored on one thread. On a machine
whose cores are busy with other work, fork/join costs milliseconds per parallel pass; there set
``NUMBA_NUM_THREADS=1`` or ``OMP_WAIT_POLICY=PASSIVE``.

Termination: the number of picks (each one a pass over the atoms) is capped at ``2 * k + 10``
and each refit at ``3 * k + 30`` Lawson-Hanson iterations. An atom numerically in the span of
the active atoms (or one whose refit weight would not be positive, a rounding artefact) is
banned for the rest of the run.

Scale:

- ``atoms`` may be a list of row blocks, including ``MappedRows`` (a ``.npy`` file, or rows of
  it, mapped only while a pass reads it: a gradient store's float16 shards are read in place,
  and resident memory stays near one shard however large the store is).
- ``column_scale`` weights columns (e.g. checkpoint blocks of a trajectory) inside the kernels:
  ``<a * s, r> = <a, s * r>`` and the norms take ``s**2``, so no scaled copy is made.
- ``refresh=R > 1`` is lazy greedy: after a full pass the 2048 best-scoring atoms are kept as
  candidates and re-scored alone for up to ``R - 1`` steps, while the best of them beats the
  best score left out at the pass. Exact on pools of at most 2048 atoms; otherwise a left-out
  atom whose score rose past that mark is missed until the next pass. Measured: on real
  gradient stores (20 Newsgroups, 3,000 x 4 x 1,024, budgets 1-10%) refresh 4 and 8 chose
  exactly the exact selections with 4-8x fewer passes; on synthetic data where the residual
  falls to ~1e-4 of the target (k close to d) the paths differ and the final residual moved
  by +-10-30% (``benchmarks/bench_pursuit.py --sklearn``).
- ``sharded_pursuit`` runs each full pass as one task per row shard, in this process or on a
  Dask cluster, and merges the shards' winners; its result equals ``pursuit``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

_DTYPES = (np.float16, np.float32, np.float64)
_OK, _REJECT = 0, 1
# An atom whose squared distance to the span of the active atoms is below this fraction of its
# squared norm (sine of the angle below 1e-5) is treated as dependent and rejected.
_DEPENDENT = 1e-10
# Relative (to ||target||) dual tolerance for re-admitting an atom inside one NNLS refit.
_DUAL_TOL = 1e-10
_F16_CHUNK = 64
# Atoms kept as candidates between full passes when ``refresh > 1``: re-scoring them costs
# 2048 * d per step, a few percent of a pass at the pool sizes where skipping passes matters.
_CANDIDATES = 2048
# Blocks with fewer elements are scored on one thread: below this, the fork/join of a parallel
# region costs more than it saves (and much more when the cores are shared).
_PARALLEL_MIN_SIZE = 1 << 18


@dataclass(frozen=True)
class PursuitResult:
    """Selected atoms in pick order, their weights, residual norms and pick-time scores.

    ``residual_norms[i]`` is ``||target - A_S^T w||`` after the step that picked
    ``indices[i]``; the last entry is the final residual. ``correlations[i]`` is the selection
    score of ``indices[i]`` when it was (last) picked.
    """

    indices: np.ndarray  # int64 atom rows, in order of (latest) pick; length <= k
    weights: np.ndarray  # float64 weight of each atom (> 0 when nonnegative)
    residual_norms: np.ndarray  # float64, one per selected atom, non-increasing
    correlations: np.ndarray  # float64 selection score of each atom when picked
    passes: int = 0  # full passes over the atoms (one per step when ``refresh=1``)


# ---------------------------------------------------------------------------------------------
# Passes over the atom matrix (parallel over rows)
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True, fastmath=True)
def _dot_float(row, r):
    """<row, r> with float64 accumulation (reassociated: vectorized)."""
    acc = 0.0
    for j in range(row.shape[0]):
        acc += np.float64(row[j]) * r[j]
    return acc


# float32 of a half's bits as ``_half_bits`` writes them, times this, is the half's value.
_HALF_MAGIC = np.float32(2.0**112)


# Inlined into each caller (in Numba's IR), so the conversion loop is compiled with the
# caller's fastmath flags and, where the caller ignores the returned flag, without its test.
@numba.njit(cache=True, inline="always")
def _half_bits(row, bits):
    """Write float16 bit patterns ``row`` (uint16) into ``bits`` (uint32) as float32 bits of
    ``value * 2^-112``; True if any of them is inf/nan (which come out finite)."""
    bad = np.uint32(0)
    for j in range(row.shape[0]):
        h = np.uint32(row[j])
        # An all-ones exponent is inf/nan; the conversion below would make it finite.
        bad |= np.uint32((h & np.uint32(0x7C00)) == np.uint32(0x7C00))
        # Sign, exponent and mantissa moved to their float32 places: read as float32 this is
        # value * 2^-112, exactly, for normal and subnormal halves; * 2^112 after is exact too.
        bits[j] = ((h & np.uint32(0x8000)) << np.uint32(16)) \
            | ((h & np.uint32(0x7FFF)) << np.uint32(13))
    return bad != 0


@numba.njit(cache=True, fastmath=True)
def _dot_half(row, r, bits):
    """``_dot_float`` of a float16 row given as uint16 bit patterns (finite values)."""
    d = row.shape[0]
    _half_bits(row, bits)
    scaled = bits.view(np.float32)
    magic = _HALF_MAGIC
    acc = 0.0
    for j in range(d):
        acc += np.float64(scaled[j] * magic) * r[j]
    return acc


@numba.njit(cache=True, parallel=True)
def _scores_float(block, r, inv_norms, out):
    """out[i] = <block[i], r> * inv_norms[i], parallel over rows."""
    for i in prange(block.shape[0]):
        out[i] = _dot_float(block[i], r) * inv_norms[i]


@numba.njit(cache=True)
def _scores_float_serial(block, r, inv_norms, out):
    """``_scores_float`` on one thread (small blocks: no fork/join latency)."""
    for i in range(block.shape[0]):
        out[i] = _dot_float(block[i], r) * inv_norms[i]


@numba.njit(cache=True, parallel=True)
def _scores_half(block, r, inv_norms, out):
    """As ``_scores_float`` for float16 rows given as uint16 bit patterns."""
    n, d = block.shape
    nchunks = (n + _F16_CHUNK - 1) // _F16_CHUNK
    for c in prange(nchunks):
        bits = np.empty(d, np.uint32)
        for i in range(c * _F16_CHUNK, min(n, (c + 1) * _F16_CHUNK)):
            out[i] = _dot_half(block[i], r, bits) * inv_norms[i]


@numba.njit(cache=True)
def _scores_half_serial(block, r, inv_norms, out):
    """``_scores_half`` on one thread."""
    d = block.shape[1]
    bits = np.empty(d, np.uint32)
    for i in range(block.shape[0]):
        out[i] = _dot_half(block[i], r, bits) * inv_norms[i]


# Reassociation lets the sums vectorize; no nnan/ninf flags, so inf/nan still propagate.
_SUM_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@numba.njit(cache=True, fastmath=_SUM_FASTMATH)
def _norm_float(row, sq):
    """sqrt(sum_j sq[j] * row[j]^2) in float64 (inf/nan propagate)."""
    acc = 0.0
    for j in range(row.shape[0]):
        v = np.float64(row[j])
        acc += v * v * sq[j]
    return np.sqrt(acc)


@numba.njit(cache=True, fastmath=_SUM_FASTMATH)
def _norm_half(row, sq, bits):
    """``_norm_float`` of a float16 row given as uint16 bit patterns; nan if any inf/nan."""
    d = row.shape[0]
    bad = _half_bits(row, bits)
    scaled = bits.view(np.float32)
    magic = _HALF_MAGIC
    acc = 0.0
    for j in range(d):
        v = np.float64(scaled[j] * magic)
        acc += v * v * sq[j]
    return np.nan if bad else np.sqrt(acc)


@numba.njit(cache=True, parallel=True)
def _norms_float(block, sq, out):
    for i in prange(block.shape[0]):
        out[i] = _norm_float(block[i], sq)


@numba.njit(cache=True)
def _norms_float_serial(block, sq, out):
    for i in range(block.shape[0]):
        out[i] = _norm_float(block[i], sq)


@numba.njit(cache=True, parallel=True)
def _norms_half(block, sq, out):
    n, d = block.shape
    nchunks = (n + _F16_CHUNK - 1) // _F16_CHUNK
    for c in prange(nchunks):
        bits = np.empty(d, np.uint32)
        for i in range(c * _F16_CHUNK, min(n, (c + 1) * _F16_CHUNK)):
            out[i] = _norm_half(block[i], sq, bits)


@numba.njit(cache=True)
def _norms_half_serial(block, sq, out):
    bits = np.empty(block.shape[1], np.uint32)
    for i in range(block.shape[0]):
        out[i] = _norm_half(block[i], sq, bits)


@numba.njit(cache=True)
def _pick(scores, excluded, signed):
    """Best non-excluded row: max score (max |score| if signed), lowest row on ties."""
    best = -1
    best_key = -np.inf
    for i in range(scores.shape[0]):
        if excluded[i]:
            continue
        key = abs(scores[i]) if signed else scores[i]
        if key > best_key:
            best_key = key
            best = i
    return best


# ---------------------------------------------------------------------------------------------
# Cholesky factor of the active Gram matrix (no fastmath: rounding matters here)
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _chol_append(L, perm, npas, G, s):
    """Append slot ``s`` as row ``npas`` of L (L L^T = G[perm, perm]); False if dependent."""
    m = npas
    gss = G[s, s]
    acc = gss
    for i in range(m):
        v = G[perm[i], s]
        for t in range(i):
            v -= L[i, t] * L[m, t]
        v /= L[i, i]
        L[m, i] = v
        acc -= v * v
    if not acc > _DEPENDENT * gss:
        return False
    L[m, m] = np.sqrt(acc)
    for t in range(m + 1, L.shape[1]):
        L[m, t] = 0.0
    perm[m] = s
    return True


@numba.njit(cache=True)
def _chol_delete(L, perm, npas, pos):
    """Remove position ``pos`` from the factor: shift rows up and rank-one update the tail."""
    m = npas
    v = np.empty(m - pos - 1)
    for i in range(pos + 1, m):
        v[i - pos - 1] = L[i, pos]
    # Rows below pos move up one, columns right of pos move left one (zeros above the diagonal
    # stay zeros).
    for i in range(pos + 1, m):
        for t in range(pos):
            L[i - 1, t] = L[i, t]
        for t in range(pos + 1, i + 1):
            L[i - 1, t - 1] = L[i, t]
        L[i - 1, i] = 0.0
        perm[i - 1] = perm[i]
    for t in range(m):
        L[m - 1, t] = 0.0
    # The trailing block (rows/cols pos .. m-2) becomes chol(L33 L33^T + v v^T).
    nt = m - pos - 1
    for kk in range(nt):
        a = pos + kk
        lkk = L[a, a]
        rr = np.sqrt(lkk * lkk + v[kk] * v[kk])
        c = rr / lkk
        sn = v[kk] / lkk
        L[a, a] = rr
        for i in range(kk + 1, nt):
            b = pos + i
            L[b, a] = (L[b, a] + sn * v[i]) / c
            v[i] = c * v[i] - sn * L[b, a]


@numba.njit(cache=True)
def _chol_solve(L, perm, npas, h, z):
    """z[perm[:npas]] = G_PP^{-1} h[perm[:npas]] by two triangular solves."""
    y = np.empty(npas)
    for i in range(npas):
        v = h[perm[i]]
        for t in range(i):
            v -= L[i, t] * y[t]
        y[i] = v / L[i, i]
    for i in range(npas - 1, -1, -1):
        v = y[i]
        for t in range(i + 1, npas):
            v -= L[t, i] * y[t]
        y[i] = v / L[i, i]
    for i in range(npas):
        z[perm[i]] = y[i]


# ---------------------------------------------------------------------------------------------
# One pursuit step: add an atom, refit, residual, drop zero-weight atoms
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True, fastmath=True)
def _gram_column(X, s, a, b, G, h):
    """G[:s+1, s] = G[s, :s+1] = X[:s+1] a and h[s] = <a, b> (X[s] already holds a)."""
    for u in range(s + 1):
        acc = _dot_float(X[u], a)
        G[u, s] = acc
        G[s, u] = acc
    h[s] = _dot_float(a, b)


@numba.njit(cache=True)
def _add_and_refit(a, j, score, b, X, G, h, w, L, perm, in_p, slot_atom, slot_score, sizes,
                   nonnegative, dual_tol, max_inner):
    """Put atom row ``a`` (row ``j``) in a new slot and refit the weights of all slots.

    Slots ``0..q-1`` hold the atoms of the small problem in pick order; ``perm[:npas]`` lists
    the positive (passive) ones in Cholesky order. Returns ``_REJECT`` (state unchanged) if the
    atom is numerically dependent on the active ones or its refit weight is not positive.
    """
    q = sizes[0]
    npas = sizes[1]
    s = q
    d = a.shape[0]
    for t in range(d):
        X[s, t] = a[t]
    _gram_column(X, s, a, b, G, h)
    w[s] = 0.0
    if not _chol_append(L, perm, npas, G, s):
        return _REJECT
    npas += 1
    q += 1
    z = np.zeros(q)
    if not nonnegative:
        _chol_solve(L, perm, npas, h, z)
        for u in range(q):
            w[u] = z[u]
        in_p[s] = 1
    else:
        # Lawson-Hanson on the q slots, warm-started from the previous (optimal) weights.
        in_p[s] = 1
        skip = np.zeros(q, np.bool_)
        entering = s
        fresh = True
        it = 0
        while True:
            capped = False
            while True:
                it += 1
                if it > max_inner:
                    capped = True
                    break
                _chol_solve(L, perm, npas, h, z)
                if fresh:
                    fresh = False
                    if not z[entering] > 0.0:
                        # Entering atom is last in perm: dropping it needs no update.
                        npas -= 1
                        in_p[entering] = 0
                        if entering == s:
                            return _REJECT
                        skip[entering] = True
                        break
                alpha = 2.0
                worst = -1
                for i in range(npas):
                    u = perm[i]
                    if z[u] <= 0.0:
                        step = w[u] / (w[u] - z[u])
                        if step < alpha:
                            alpha = step
                            worst = u
                if worst < 0:
                    for i in range(npas):
                        w[perm[i]] = z[perm[i]]
                    break
                for i in range(npas):
                    u = perm[i]
                    w[u] += alpha * (z[u] - w[u])
                w[worst] = 0.0
                i = npas - 1
                while i >= 0:
                    u = perm[i]
                    if w[u] <= 0.0:
                        w[u] = 0.0
                        in_p[u] = 0
                        _chol_delete(L, perm, npas, i)
                        npas -= 1
                    i -= 1
            if capped:
                break
            # Optimality on the small problem: re-admit the zero-weight slot with the largest
            # positive (normalized) gradient, if any.
            best = -1
            best_g = dual_tol
            for u in range(q):
                if in_p[u] or skip[u]:
                    continue
                g = h[u]
                for t in range(q):
                    g -= G[u, t] * w[t]
                g /= np.sqrt(G[u, u])
                if g > best_g:
                    best_g = g
                    best = u
            if best < 0:
                break
            if not _chol_append(L, perm, npas, G, best):
                skip[best] = True
                continue
            npas += 1
            in_p[best] = 1
            entering = best
            fresh = True
    slot_atom[s] = j
    slot_score[s] = score
    sizes[0] = q
    sizes[1] = npas
    return _OK


@numba.njit(cache=True)
def _residual(b, X, w, q, r):
    """r = b - X[:q]^T w[:q]; returns ||r||."""
    d = b.shape[0]
    for t in range(d):
        r[t] = b[t]
    for u in range(q):
        wu = w[u]
        if wu != 0.0:
            for t in range(d):
                r[t] -= wu * X[u, t]
    acc = 0.0
    for t in range(d):
        acc += r[t] * r[t]
    return np.sqrt(acc)


@numba.njit(cache=True)
def _compact(X, G, h, w, perm, in_p, slot_atom, slot_score, slot_rnorm, sizes):
    """Drop slots outside the passive set, keeping pick order; returns the dropped atoms."""
    q = sizes[0]
    npas = sizes[1]
    new_of = np.full(q, -1, np.int64)
    dropped = np.empty(q - npas, np.int64)
    nd = 0
    m = 0
    for u in range(q):
        if in_p[u]:
            new_of[u] = m
            m += 1
        else:
            dropped[nd] = slot_atom[u]
            nd += 1
    if nd == 0:
        return dropped
    for u in range(q):
        nu = new_of[u]
        if nu < 0 or nu == u:
            continue
        X[nu] = X[u]
        h[nu] = h[u]
        w[nu] = w[u]
        slot_atom[nu] = slot_atom[u]
        slot_score[nu] = slot_score[u]
        slot_rnorm[nu] = slot_rnorm[u]
        in_p[nu] = 1
    for u in range(q):
        nu = new_of[u]
        if nu < 0:
            continue
        for t in range(q):
            nt = new_of[t]
            if nt >= 0:
                G[nu, nt] = G[u, t]
    for u in range(m, q):
        in_p[u] = 0
        w[u] = 0.0
    for i in range(npas):
        perm[i] = new_of[perm[i]]
    sizes[0] = m
    return dropped


# ---------------------------------------------------------------------------------------------
# Atom sources: one array, or row blocks read as their concatenation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedRows:
    """Rows ``[start, stop)`` of a ``.npy`` file, memory-mapped only while they are read.

    Only the path travels to a Dask worker, and the mapping is dropped after every pass, so the
    file's pages do not pile up in the reader's resident memory. A 3-D C-ordered file of shape
    (rows, checkpoints, dim), as the gradient datastore writes, reads as (rows, checkpoints * dim)
    (a view, no copy).
    """

    path: str
    start: int = 0
    stop: int | None = None

    def open(self) -> np.ndarray:
        arr = np.load(self.path, mmap_mode="r")
        if arr.ndim == 3:
            if not arr.flags.c_contiguous:
                raise ValueError(f"{self.path}: a 3-D atom file must be C-ordered")
            arr = arr.reshape(arr.shape[0], -1)
        stop = arr.shape[0] if self.stop is None else self.stop
        if not 0 <= self.start <= stop <= arr.shape[0]:
            raise ValueError(f"{self.path}: rows [{self.start}, {stop}) are outside the file's "
                             f"{arr.shape[0]} rows")
        return arr[self.start:stop]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The given rows (relative to ``start``, ascending) by plain file reads.

        Not through a mapping: a page fault maps the whole page-cache folio around it, so
        gathering 2048 scattered rows of a 1 GB file through a memory map made ~1 GB resident.
        """
        view = self.open()  # validates the rows; its mapping is never touched
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(view)):
            raise ValueError(f"{self.path}: rows must lie in [0, {len(view)}), got "
                             f"{rows.min()}..{rows.max()}")
        out = np.empty((len(rows), view.shape[1]), view.dtype)
        row_bytes = out.shape[1] * out.dtype.itemsize
        with open(self.path, "rb") as f:
            for i, row in enumerate(rows):
                f.seek(view.offset + (self.start + int(row)) * row_bytes)
                if f.readinto(out[i].view(np.uint8)) != row_bytes:
                    raise ValueError(f"{self.path}: short read at row {self.start + int(row)}")
        return out


AtomPart = np.ndarray | MappedRows
Atoms = AtomPart | Sequence[AtomPart]


class _Atoms:
    """Validated row blocks read as one (n, d) matrix; ``MappedRows`` are opened per read."""

    def __init__(self, atoms: Atoms) -> None:
        if isinstance(atoms, np.ndarray | MappedRows):
            parts = [atoms]
        elif isinstance(atoms, list | tuple) and len(atoms) > 0:
            parts = list(atoms)
        else:
            raise ValueError("atoms must be a numpy array or np.memmap, a MappedRows, or a "
                             f"non-empty list of them, got {type(atoms).__name__}")
        rows, dtypes, d = [], set(), None
        for part in parts:
            if not isinstance(part, np.ndarray | MappedRows):
                raise ValueError("atoms must be a numpy array or np.memmap, a MappedRows, or a "
                                 f"list of them, got a {type(part).__name__} part")
            arr = part.open() if isinstance(part, MappedRows) else part
            if arr.ndim != 2 or arr.shape[1] == 0:
                raise ValueError(f"atoms must be a non-empty 2-D (n, d) array, got shape {arr.shape}")
            if arr.dtype not in _DTYPES:
                raise ValueError(f"atoms dtype must be float16, float32 or float64, got {arr.dtype}")
            if d is not None and arr.shape[1] != d:
                raise ValueError(f"atom parts have different widths: {d} and {arr.shape[1]}")
            d = arr.shape[1]
            rows.append(arr.shape[0])
            dtypes.add(arr.dtype)
        if len(dtypes) > 1:
            raise ValueError(f"atom parts must share one dtype, got {sorted(map(str, dtypes))}")
        self.parts = parts
        self.offsets = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self.n, self.d = int(self.offsets[-1]), int(d)
        if self.n == 0:
            raise ValueError(f"atoms must be a non-empty 2-D (n, d) array, got shape (0, {d})")
        self.dtype = dtypes.pop()
        self.half = self.dtype == np.float16

    def _array(self, i: int) -> np.ndarray:
        part = self.parts[i]
        return part.open() if isinstance(part, MappedRows) else np.asarray(part)  # no copy

    def blocks(self, block_rows: int):
        """(first row, C-contiguous block) pairs; float16 as uint16 bits; copies only if needed.

        A ``MappedRows`` part is mapped anew for every block, so that the pages one block made
        resident are released with it: resident memory stays near one block.
        """
        for i in range(len(self.parts)):
            for start in range(0, int(self.offsets[i + 1] - self.offsets[i]), block_rows):
                block = np.ascontiguousarray(self._array(i)[start:start + block_rows])
                yield int(self.offsets[i]) + start, block.view(np.uint16) if self.half else block

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """A new (m, d) array of the rows at ascending ``indices``, in the stored dtype."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.d), self.dtype)
        part_of = np.searchsorted(self.offsets, indices, side="right") - 1
        for i in np.unique(part_of):
            sel = part_of == i
            part, local = self.parts[int(i)], indices[sel] - self.offsets[i]
            out[sel] = part.read(local) if isinstance(part, MappedRows) else part[local]
        return out

    def split(self, bounds: np.ndarray) -> list[list[AtomPart]]:
        """The parts covering each row range ``[bounds[s], bounds[s + 1])``, as views."""
        out = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            pieces: list[AtomPart] = []
            for i, part in enumerate(self.parts):
                a = max(lo, self.offsets[i]) - self.offsets[i]
                b = min(hi, self.offsets[i + 1]) - self.offsets[i]
                if a >= b:
                    continue
                if isinstance(part, MappedRows):
                    pieces.append(MappedRows(part.path, part.start + int(a), part.start + int(b)))
                else:
                    pieces.append(part[a:b])
            out.append(pieces)
        return out


# ---------------------------------------------------------------------------------------------
# Python driver
# ---------------------------------------------------------------------------------------------


def _norms(src: _Atoms, sq: np.ndarray, block_rows: int) -> np.ndarray:
    """sqrt(sum_j sq[j] * a_j^2) of every atom (inf/nan propagate)."""
    norms = np.empty(src.n)
    for start, block in src.blocks(block_rows):
        parallel = block.size >= _PARALLEL_MIN_SIZE
        kernel = (_norms_half if parallel else _norms_half_serial) if src.half \
            else (_norms_float if parallel else _norms_float_serial)
        kernel(block, sq, norms[start:start + len(block)])
    return norms


def _inverse_norms(norms: np.ndarray, normalize: bool) -> np.ndarray:
    """Score scale per atom: 1/||a|| (or 1 without ``normalize``), 0 for zero atoms; an error
    naming the first row with NaN or inf."""
    if not np.isfinite(norms).all():
        bad = int(np.flatnonzero(~np.isfinite(norms))[0])
        raise ValueError(f"atoms contain NaN or inf (first in row {bad})")
    inv = np.zeros(len(norms))
    positive = norms > 0
    inv[positive] = 1.0 / norms[positive] if normalize else 1.0
    return inv


def _score(block: np.ndarray, half: bool, r: np.ndarray, inv_norms: np.ndarray,
           out: np.ndarray, serial: bool = False) -> None:
    """out = block @ r * inv_norms, on one thread for small blocks or if ``serial``."""
    parallel = block.size >= _PARALLEL_MIN_SIZE and not serial
    kernel = (_scores_half if parallel else _scores_half_serial) if half \
        else (_scores_float if parallel else _scores_float_serial)
    kernel(block, r, inv_norms, out)


def _score_all(src: _Atoms, r: np.ndarray, inv_norms: np.ndarray, block_rows: int,
               out: np.ndarray) -> np.ndarray:
    """``_score`` of every atom into ``out``, block by block; returns ``out``."""
    for start, block in src.blocks(block_rows):
        stop = start + len(block)
        _score(block, src.half, r, inv_norms[start:stop], out[start:stop])
    return out


def _validate(atoms, target, k, tol, block_rows, column_scale, refresh
              ) -> tuple[_Atoms, np.ndarray, np.ndarray | None]:
    src = _Atoms(atoms)
    target = np.asarray(target)
    if target.dtype.kind not in "fiu":
        raise ValueError(f"target must be numeric, got dtype {target.dtype}")
    if target.ndim not in (1, 2):
        raise ValueError(f"target must be (d,) or (t, d), got shape {target.shape}")
    if target.size != src.d:
        raise ValueError(
            f"target shape {target.shape} does not match atoms shape {(src.n, src.d)}: "
            f"target.size must equal atoms.shape[1] ({src.d})")
    b = np.ascontiguousarray(target, dtype=np.float64).reshape(-1)
    if not np.isfinite(b).all():
        raise ValueError("target contains NaN or inf")
    _check_count("k", k)
    if k > src.n:
        raise ValueError(f"k={k} exceeds the number of atoms n={src.n}")
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be finite and >= 0, got {tol}")
    _check_count("block_rows", block_rows)
    _check_count("refresh", refresh)
    scale = None
    if column_scale is not None:
        scale = np.ascontiguousarray(column_scale, dtype=np.float64)
        if scale.shape != (src.d,):
            raise ValueError(f"column_scale must have shape ({src.d},), got {scale.shape}")
        if not (np.isfinite(scale).all() and (scale >= 0).all()):
            raise ValueError("column_scale must be finite and >= 0")
    return src, b, scale


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be >= 1 and an integer, got {value!r}")


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
class _Pass:
    """What a full pass over the atoms yields: the best non-excluded row ``j`` (-1 if none) and
    its score; when candidates were asked for, the best non-banned rows (ascending), their keys
    and the best key left out."""

    j: int
    score: float
    cand: np.ndarray | None = None
    cand_keys: np.ndarray | None = None
    left_out: float = -np.inf


def _full_pass(scores: np.ndarray, excluded: np.ndarray, banned: np.ndarray, signed: bool,
               m: int) -> _Pass:
    j = _pick(scores, excluded, signed)
    score = float(scores[j]) if j >= 0 else 0.0
    if not m:
        return _Pass(j, score)
    cand, left_out = _candidates(scores, banned, signed, m)
    keys = np.abs(scores[cand]) if signed else scores[cand]
    return _Pass(j, score, cand, keys, left_out)


def pursuit(atoms: Atoms, target: np.ndarray, k: int, *, nonnegative: bool = True,
            tol: float = 1e-6, block_rows: int = 65536, normalize: bool = True,
            column_scale: np.ndarray | None = None, refresh: int = 1) -> PursuitResult:
    """Greedily pick at most ``k`` atoms whose (non-negative) combination reconstructs target.

    ``atoms`` is (n, d) float16/float32/float64, possibly an ``np.memmap``, or a list of such row
    blocks (arrays or ``MappedRows``) of one dtype, read as their concatenation; it is read in
    blocks of ``block_rows`` rows and never copied whole. ``target`` is (d,), or (t, d) for t
    targets matched jointly: it is flattened row-major, so ``atoms`` rows must then be the
    matching length-``t*d`` concatenations. ``column_scale`` (d,) makes the atoms
    ``atoms * column_scale`` (e.g. a weight per checkpoint block) without forming the product.

    ``refresh=1`` scores every atom at every step: the exact greedy rule. ``refresh=R > 1``
    trades exactness for speed (lazy greedy): a full pass keeps the 2048 best-scoring atoms as
    candidates, the next steps re-score only those, and a full pass comes again after ``R``
    steps or as soon as the best candidate no longer beats the best score left out at the last
    pass. A step then picks the exact argmax unless a left-out atom's score rose past that mark
    in the meantime. Exact when n <= 2048. See the module docstring for the algorithm.
    """
    src, b, scale = _validate(atoms, target, k, tol, block_rows, column_scale, refresh)
    sq = np.ones(src.d) if scale is None else scale * scale
    norms = _norms(src, sq, block_rows)
    inv_norms = _inverse_norms(norms, normalize)
    scores = np.empty(src.n)

    def full_pass(rs, excluded, banned, signed, m):
        return _full_pass(_score_all(src, rs, inv_norms, block_rows, scores), excluded, banned,
                          signed, m)

    return _pursue(src, inv_norms, float(norms.max()), full_pass, b, int(k), nonnegative, tol,
                   normalize, scale, refresh)


def _pursue(src: _Atoms, inv_norms: np.ndarray, max_norm: float, full_pass, b: np.ndarray,
            k: int, nonnegative: bool, tol: float, normalize: bool, scale: np.ndarray | None,
            refresh: int) -> PursuitResult:
    """The pursuit loop; ``full_pass(r, excluded, banned, signed, m) -> _Pass`` scores all atoms.

    Row data (the picked atom, lazy candidates) is read from ``src`` here; only the full passes
    are delegated, so the same loop runs over one array or over shards on a cluster.
    """
    d = src.d
    half = src.half
    signed = not nonnegative
    positive = inv_norms > 0
    b_norm = float(np.linalg.norm(b))
    threshold = tol * b_norm * (1.0 if normalize else max_norm)
    excluded = ~positive  # zero atoms can never help
    banned = excluded.copy()

    X = np.zeros((k, d))
    G = np.zeros((k, k))
    h = np.zeros(k)
    w = np.zeros(k)
    L = np.zeros((k, k))
    perm = np.zeros(k, np.int64)
    in_p = np.zeros(k, np.uint8)
    slot_atom = np.zeros(k, np.int64)
    slot_score = np.zeros(k)
    slot_rnorm = np.zeros(k)
    sizes = np.zeros(2, np.int64)  # q (slots), npas (passive slots)
    r = b.copy()
    r_norm = b_norm
    dual_tol = _DUAL_TOL * b_norm
    max_inner = 3 * k + 30
    cand = cand_rows = cand_inv = None  # candidates between full passes: rows, data, 1/norms
    left_out = -np.inf  # best key outside the candidates at the last full pass
    passes = 0
    since = 0  # steps since the last full pass

    for _ in range(2 * k + 10):
        if sizes[0] >= k or r_norm <= tol * b_norm:
            break
        # Scoring <a * scale, r> = <a, scale * r>: the scaled atoms are never formed.
        rs = r if scale is None else r * scale
        since += 1
        j = -1
        if cand is not None and since < refresh:
            cand_scores = np.empty(len(cand))
            # One thread: a few thousand rows score in about a millisecond, less than a
            # fork/join costs when the cores are shared.
            _score(cand_rows, half, rs, cand_inv, cand_scores, serial=True)
            jc = _pick(cand_scores, excluded[cand], signed)
            if jc >= 0:
                score = float(cand_scores[jc])
                key = abs(score) if signed else score
                if key > left_out and key > threshold:
                    j = int(cand[jc])
        if j < 0:
            result = full_pass(rs, excluded, banned, signed, _CANDIDATES if refresh > 1 else 0)
            passes += 1
            j, score = result.j, result.score
            if j < 0 or (abs(score) if signed else score) <= threshold:
                break
            if refresh > 1:
                cand, left_out, since = result.cand, result.left_out, 0
                cand_rows = src.rows(cand)
                if half:
                    cand_rows = cand_rows.view(np.uint16)
                cand_inv = inv_norms[cand]
        a = src.rows(np.array([j]))[0].astype(np.float64)
        if scale is not None:
            a *= scale
        status = _add_and_refit(a, j, score, b, X, G, h, w, L, perm, in_p, slot_atom,
                                slot_score, sizes, nonnegative, dual_tol, max_inner)
        if status == _REJECT:
            banned[j] = excluded[j] = True
            continue
        excluded[j] = True
        r_norm = float(_residual(b, X, w, int(sizes[0]), r))
        slot_rnorm[sizes[0] - 1] = r_norm
        dropped = _compact(X, G, h, w, perm, in_p, slot_atom, slot_score, slot_rnorm, sizes)
        excluded[dropped] = banned[dropped]

    q = int(sizes[0])
    residual_norms = slot_rnorm[:q].copy()
    if q:
        residual_norms[-1] = r_norm
    return PursuitResult(indices=slot_atom[:q].copy(), weights=w[:q].copy(),
                         residual_norms=residual_norms, correlations=slot_score[:q].copy(),
                         passes=passes)


def correlations(atoms: Atoms, vector: np.ndarray, *, normalize: bool = True,
                 column_scale: np.ndarray | None = None, block_rows: int = 65536) -> np.ndarray:
    """``<a_i, vector> / ||a_i||`` for every atom (0 for zero atoms), in one blocked pass.

    ``atoms`` and ``column_scale`` as in ``pursuit``; with ``normalize=False`` the plain inner
    products.
    """
    src, v, scale = _validate(atoms, vector, 1, 0.0, block_rows, column_scale, 1)
    inv_norms = _inverse_norms(
        _norms(src, np.ones(src.d) if scale is None else scale * scale, block_rows), normalize)
    return _score_all(src, v if scale is None else v * scale, inv_norms, block_rows,
                      np.empty(src.n))


# ---------------------------------------------------------------------------------------------
# Sharded pursuit: the full passes run per shard, in process or on a Dask cluster
# ---------------------------------------------------------------------------------------------


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
    src, b, scale = _validate(atoms, target, k, tol, block_rows, column_scale, refresh)
    _check_count("shards", shards)
    if shards > src.n:
        raise ValueError(f"shards={shards} exceeds the number of atoms n={src.n}")
    bounds = np.linspace(0, src.n, shards + 1).round().astype(np.int64)
    pieces = src.split(bounds)
    sq = np.ones(src.d) if scale is None else scale * scale
    with _runner(scheduler, pieces) as runner:
        parts = [[runner.put(piece) for piece in shard] for shard in pieces]
        norms = np.concatenate(runner.map(_shard_norms, [(p, sq, block_rows) for p in parts]))
        inv_norms = _inverse_norms(norms, normalize)
        inv_parts = [runner.put(inv_norms[lo:hi])
                     for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

        def full_pass(rs, excluded, banned, signed, m):
            tasks = [(part, inv, rs, _rows_in(excluded, lo, hi), _rows_in(banned, lo, hi),
                      signed, m, block_rows)
                     for part, inv, lo, hi in zip(parts, inv_parts, bounds[:-1], bounds[1:],
                                                  strict=True)]
            return _merge(runner.map(_shard_pass, tasks), bounds, signed, m)

        return _pursue(src, inv_norms, float(norms.max()), full_pass, b, int(k), nonnegative,
                       tol, normalize, scale, refresh)


def _rows_in(mask: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows of ``mask[lo:hi]`` that are set, relative to ``lo`` (a short list, not the mask)."""
    return np.flatnonzero(mask[lo:hi])


def _shard_norms(pieces: list[AtomPart], sq: np.ndarray, block_rows: int) -> np.ndarray:
    """Task: the scaled norms of a shard's rows."""
    return _norms(_Atoms(pieces), sq, block_rows)


def _shard_pass(pieces: list[AtomPart], inv_norms: np.ndarray, r: np.ndarray,
                excluded: np.ndarray, banned: np.ndarray, signed: bool, m: int,
                block_rows: int) -> _Pass:
    """Task: one full pass over a shard (rows relative to the shard)."""
    src = _Atoms(pieces)
    scores = _score_all(src, r, inv_norms, block_rows, np.empty(src.n))
    return _full_pass(scores, _mask(excluded, src.n), _mask(banned, src.n), signed, m)


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    mask[rows] = True
    return mask


def _merge(passes: list[_Pass], bounds: np.ndarray, signed: bool, m: int) -> _Pass:
    """One ``_Pass`` over all rows from the shards' passes, as ``_full_pass`` would give."""
    j, score, best = -1, 0.0, -np.inf
    for p, lo in zip(passes, bounds[:-1], strict=True):
        key = abs(p.score) if signed else p.score
        if p.j >= 0 and key > best:  # strictly: ties go to the lower (earlier) row
            j, score, best = int(lo + p.j), p.score, key
    if not m:
        return _Pass(j, score)
    rows = np.concatenate([lo + p.cand for p, lo in zip(passes, bounds[:-1], strict=True)])
    keys = np.concatenate([p.cand_keys for p in passes])
    order = np.lexsort((rows, -keys))  # highest keys first, lower rows on ties
    chosen, rest = order[:m], order[m:]
    left_outs = [p.left_out for p in passes]
    if len(rest):
        left_outs.append(float(keys[rest].max()))
    keep = np.sort(chosen)
    return _Pass(j, score, rows[keep], keys[keep], max(left_outs))


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
