"""A from-scratch reference for ``curation.pursuit``, for the tests and ``benchmarks/bench_pursuit.py``.

Not in ``curation``: nothing but the tests and the benchmark should run it. The benchmark puts
the repository root on ``sys.path`` and imports it as ``tests.reference``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from curation.pursuit import PursuitResult


def reference_pursuit(atoms: np.ndarray, target: np.ndarray, k: int, *, nonnegative: bool = True,
                      tol: float = 1e-6, normalize: bool = True) -> PursuitResult:
    """Same greedy rule as ``pursuit``; weights refit from scratch each step (scipy NNLS or lstsq).

    Plain NumPy/SciPy, so it checks the Numba kernels and is the baseline they are timed against.
    """
    A = np.asarray(atoms, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64).reshape(-1)
    norms = np.linalg.norm(A, axis=1)
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0) if normalize \
        else (norms > 0).astype(float)
    b_norm = np.linalg.norm(b)
    threshold = tol * b_norm * (1.0 if normalize else norms.max())
    active: list[int] = []
    picked_score: dict[int, float] = {}
    picked_rnorm: dict[int, float] = {}
    w = np.zeros(0)
    r = b.copy()
    for _ in range(2 * k + 10):
        if len(active) >= k or np.linalg.norm(r) <= tol * b_norm:
            break
        scores = (A @ r) * scale
        key = scores.copy() if nonnegative else np.abs(scores)
        key[active] = -np.inf
        key[norms == 0] = -np.inf
        j = int(np.argmax(key))
        if key[j] <= threshold:
            break
        cand = active + [j]
        if nonnegative:
            # Looser than scipy's default cap (3 iterations per column, past which nnls raises)
            # for the benchmark's refits of hundreds of atoms; a refit that finishes under the
            # default cap gives the same result under this one.
            x, _ = nnls(A[cand].T, b, maxiter=10 * len(cand) + 100)
        else:
            x = np.linalg.lstsq(A[cand].T, b, rcond=None)[0]
        keep = [i for i, xi in enumerate(x) if xi > 0 or not nonnegative]
        active = [cand[i] for i in keep]
        w = x[keep]
        r = b - A[active].T @ w
        picked_score[j] = float(scores[j])
        picked_rnorm[j] = float(np.linalg.norm(r))
    rn = np.array([picked_rnorm[i] for i in active])
    if len(rn):
        rn[-1] = np.linalg.norm(r)
    return PursuitResult(np.array(active, dtype=np.int64), np.asarray(w, dtype=float), rn,
                         np.array([picked_score[i] for i in active]))
