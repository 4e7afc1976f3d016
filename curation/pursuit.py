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
"""

from __future__ import annotations

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


@numba.njit(cache=True, fastmath=True)
def _dot_half(row, r, bits):
    """``_dot_float`` of a float16 row given as uint16 bit patterns (finite values)."""
    d = row.shape[0]
    for j in range(d):
        h = np.uint32(row[j])
        # Sign, exponent and mantissa moved to their float32 places: read as float32 this is
        # value * 2^-112, exactly, for normal and subnormal halves; * 2^112 below is exact too.
        bits[j] = ((h & np.uint32(0x8000)) << np.uint32(16)) \
            | ((h & np.uint32(0x7FFF)) << np.uint32(13))
    scaled = bits.view(np.float32)
    magic = np.float32(2.0**112)
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


@numba.njit(cache=True)
def _norm_float(row):
    """||row|| in float64 (inf/nan propagate)."""
    acc = 0.0
    for j in range(row.shape[0]):
        v = np.float64(row[j])
        acc += v * v
    return np.sqrt(acc)


@numba.njit(cache=True)
def _norm_half(row):
    """``_norm_float`` of a float16 row given as uint16 bit patterns; nan if any inf/nan."""
    acc = 0.0
    bad = False
    for j in range(row.shape[0]):
        h = np.int64(row[j])
        if (h & 0x7C00) == 0x7C00:
            bad = True
        e = (h >> 10) & 0x1F
        m = h & 0x3FF
        v = m * 2.0**-24 if e == 0 else (1024 + m) * 2.0 ** (e - 25)
        acc += v * v
    return np.nan if bad else np.sqrt(acc)


@numba.njit(cache=True, parallel=True)
def _norms_float(block, out):
    for i in prange(block.shape[0]):
        out[i] = _norm_float(block[i])


@numba.njit(cache=True)
def _norms_float_serial(block, out):
    for i in range(block.shape[0]):
        out[i] = _norm_float(block[i])


@numba.njit(cache=True, parallel=True)
def _norms_half(block, out):
    for i in prange(block.shape[0]):
        out[i] = _norm_half(block[i])


@numba.njit(cache=True)
def _norms_half_serial(block, out):
    for i in range(block.shape[0]):
        out[i] = _norm_half(block[i])


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
# Python driver
# ---------------------------------------------------------------------------------------------


def _blocks(arr: np.ndarray, block_rows: int):
    """(start, C-contiguous block) pairs; a copy only if ``arr`` is not C-contiguous."""
    for start in range(0, arr.shape[0], block_rows):
        yield start, np.ascontiguousarray(arr[start:start + block_rows])


def _validate(atoms, target, k, tol, block_rows) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(atoms, np.ndarray):
        raise ValueError(f"atoms must be a numpy array or np.memmap, got {type(atoms).__name__}")
    if atoms.ndim != 2 or atoms.shape[0] == 0 or atoms.shape[1] == 0:
        raise ValueError(f"atoms must be a non-empty 2-D (n, d) array, got shape {atoms.shape}")
    if atoms.dtype not in _DTYPES:
        raise ValueError(f"atoms dtype must be float16, float32 or float64, got {atoms.dtype}")
    target = np.asarray(target)
    if target.dtype.kind not in "fiu":
        raise ValueError(f"target must be numeric, got dtype {target.dtype}")
    if target.ndim not in (1, 2):
        raise ValueError(f"target must be (d,) or (t, d), got shape {target.shape}")
    if target.size != atoms.shape[1]:
        raise ValueError(
            f"target shape {target.shape} does not match atoms shape {atoms.shape}: target.size "
            f"must equal atoms.shape[1] ({atoms.shape[1]})")
    b = np.ascontiguousarray(target, dtype=np.float64).reshape(-1)
    if not np.isfinite(b).all():
        raise ValueError("target contains NaN or inf")
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > atoms.shape[0]:
        raise ValueError(f"k={k} exceeds the number of atoms n={atoms.shape[0]}")
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be finite and >= 0, got {tol}")
    if isinstance(block_rows, bool) or not isinstance(block_rows, int | np.integer) \
            or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    arr = np.asarray(atoms)  # a view for np.memmap; no copy
    return arr, b


def pursuit(atoms: np.ndarray, target: np.ndarray, k: int, *, nonnegative: bool = True,
            tol: float = 1e-6, block_rows: int = 65536, normalize: bool = True) -> PursuitResult:
    """Greedily pick at most ``k`` atoms whose (non-negative) combination reconstructs target.

    ``atoms`` is (n, d) float16/float32/float64, possibly an ``np.memmap``; it is read in blocks
    of ``block_rows`` rows and never copied whole. ``target`` is (d,), or (t, d) for t targets
    matched jointly: it is flattened row-major, so ``atoms`` rows must then be the matching
    length-``t*d`` concatenations. See the module docstring for the algorithm and stopping rules.
    """
    arr, b = _validate(atoms, target, k, tol, block_rows)
    n, d = arr.shape
    k = int(k)
    half = arr.dtype == np.float16
    if half:
        arr = arr.view(np.uint16)
    scores_parallel = _scores_half if half else _scores_float
    scores_serial = _scores_half_serial if half else _scores_float_serial
    norms_parallel = _norms_half if half else _norms_float
    norms_serial = _norms_half_serial if half else _norms_float_serial

    norms = np.empty(n)
    for start, block in _blocks(arr, block_rows):
        kernel = norms_parallel if block.size >= _PARALLEL_MIN_SIZE else norms_serial
        kernel(block, norms[start:start + len(block)])
    if not np.isfinite(norms).all():
        bad = int(np.flatnonzero(~np.isfinite(norms))[0])
        raise ValueError(f"atoms contain NaN or inf (first in row {bad})")
    inv_norms = np.zeros(n)
    positive = norms > 0
    inv_norms[positive] = 1.0 / norms[positive] if normalize else 1.0

    b_norm = float(np.linalg.norm(b))
    threshold = tol * b_norm * (1.0 if normalize else float(norms.max()))
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
    scores = np.empty(n)
    dual_tol = _DUAL_TOL * b_norm
    max_inner = 3 * k + 30

    for _ in range(2 * k + 10):
        if sizes[0] >= k or r_norm <= tol * b_norm:
            break
        for start, block in _blocks(arr, block_rows):
            stop = start + len(block)
            kernel = scores_parallel if block.size >= _PARALLEL_MIN_SIZE else scores_serial
            kernel(block, r, inv_norms[start:stop], scores[start:stop])
        j = _pick(scores, excluded, not nonnegative)
        if j < 0:
            break
        score = float(scores[j])
        if (score if nonnegative else abs(score)) <= threshold:
            break
        a = np.asarray(arr[j].view(np.float16) if half else arr[j], dtype=np.float64)
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
                         residual_norms=residual_norms, correlations=slot_score[:q].copy())
