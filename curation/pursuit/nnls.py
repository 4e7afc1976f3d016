"""The refit of the small problem on the active atoms, in Numba: add an atom, refit its weights
(exact NNLS by Lawson-Hanson, or least squares), the residual, and dropping zero-weight atoms.

The weights are solved on a Cholesky factor of the active Gram matrix ``G = A_S A_S^T`` that is
updated in place (a row appended per pick, a rank-one update per drop), so a refit costs
``O(|S|^2)`` plus an ``O(d |S|)`` Gram column instead of a from-scratch NNLS.
"""

from __future__ import annotations

import numba
import numpy as np

# Numba's cache does not notice edits to a function called from another file: after changing
# ``dot_float``, clear the ``__pycache__`` of this package (or touch this file).
from curation.pursuit.kernels import dot_float

# Status of ``add_and_refit``.
OK, REJECT = 0, 1
# An atom whose squared distance to the span of the active atoms is below this fraction of its
# squared norm (sine of the angle below 1e-5) is treated as dependent and rejected.
_DEPENDENT = 1e-10


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
        acc = dot_float(X[u], a)
        G[u, s] = acc
        G[s, u] = acc
    h[s] = dot_float(a, b)


@numba.njit(cache=True)
def add_and_refit(a, j, score, b, X, G, h, w, L, perm, in_p, slot_atom, slot_score, sizes,
                   nonnegative, dual_tol, max_inner):
    """Put atom row ``a`` (row ``j``) in a new slot and refit the weights of all slots.

    Slots ``0..q-1`` hold the atoms of the small problem in pick order; ``perm[:npas]`` lists
    the positive (passive) ones in Cholesky order. Returns ``REJECT`` (state unchanged) if the
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
        return REJECT
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
                            return REJECT
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
    return OK


@numba.njit(cache=True)
def residual(b, X, w, q, r):
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
def compact(X, G, h, w, perm, in_p, slot_atom, slot_score, slot_rnorm, sizes):
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
