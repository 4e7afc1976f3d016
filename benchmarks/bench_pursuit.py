"""Benchmark ``curation.pursuit.pursuit`` against a from-scratch scipy NNLS baseline.

    python benchmarks/bench_pursuit.py [--n N --d D --k K] [--n2 N --k2 K] [--seed S]

Case 1 (``--n/--d/--k``, default 20000 x 1024, k=200) and case 2 (``--n2/--k2``, default
4000 x 1024, k=600: a large budget on a smaller pool). The baseline is the same greedy rule
(scores in float64 BLAS, argmax, then ``scipy.optimize.nnls`` refit on all active atoms plus
the new one, from scratch every step), run in this process. The defaults were chosen so the
baseline finishes well under 60 s per case on a 2-core machine; larger sizes run it as is (no
extrapolation). Ours is timed after a warm-up call that JIT-compiles the kernels. Both must pick
the same indices. Case 1 is also run from a float16 memmap (ours only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.pursuit import pursuit  # noqa: E402


def baseline(atoms: np.ndarray, target: np.ndarray, k: int, tol: float = 1e-6):
    """Greedy non-negative pursuit refitting with scipy NNLS from scratch each step."""
    A = atoms.astype(np.float64)
    b = np.asarray(target, dtype=np.float64)
    norms = np.linalg.norm(A, axis=1)
    inv = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-300), 0.0)
    b_norm = np.linalg.norm(b)
    active: list[int] = []
    w = np.zeros(0)
    r = b.copy()
    for _ in range(2 * k + 10):
        if len(active) >= k or np.linalg.norm(r) <= tol * b_norm:
            break
        scores = (A @ r) * inv
        scores[active] = -np.inf
        j = int(np.argmax(scores))
        if scores[j] <= tol * b_norm:
            break
        cand = active + [j]
        x, _ = nnls(A[cand].T, b, maxiter=10 * len(cand) + 100)
        active = [c for c, xi in zip(cand, x, strict=True) if xi > 0]
        w = x[x > 0]
        r = b - A[active].T @ w
    return np.array(active, dtype=np.int64), w, float(np.linalg.norm(r))


def make_data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gradient-like atoms (low-rank class structure plus noise) and a mean-of-subset target."""
    rng = np.random.default_rng(seed)
    rank = 32
    basis = rng.standard_normal((rank, d)) / np.sqrt(d)
    atoms = rng.standard_normal((n, rank)) @ basis + 0.5 * rng.standard_normal((n, d)) / np.sqrt(d)
    atoms = atoms.astype(np.float32)
    target = atoms[rng.choice(n, 50, replace=False)].astype(np.float64).mean(axis=0)
    target += 0.05 * rng.standard_normal(d) / np.sqrt(d)
    return atoms, target


def run_case(n: int, d: int, k: int, seed: int, half: bool) -> None:
    atoms, target = make_data(n, d, seed)
    print(f"\n== n={n} d={d} k={k} (float32 atoms, {atoms.nbytes / 2**20:.0f} MiB)")
    pursuit(atoms[:200], target, 5)  # warm-up: JIT compile (or load the cache)
    t0 = time.perf_counter()
    ours = pursuit(atoms, target, k)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx, w, rnorm = baseline(atoms, target, k)
    t_base = time.perf_counter() - t0
    same = np.array_equal(ours.indices, idx)
    print(f"baseline (scipy nnls from scratch): {t_base:8.2f} s  picks={len(idx)}  "
          f"rel.residual={rnorm / np.linalg.norm(target):.4f}")
    print(f"ours (numba, incremental Cholesky):  {t_ours:8.2f} s  picks={len(ours.indices)}  "
          f"rel.residual={ours.residual_norms[-1] / np.linalg.norm(target):.4f}")
    print(f"speed-up: {t_base / t_ours:.1f}x   same indices: {same}   "
          f"max |weight diff|: {np.abs(ours.weights - w).max() if same else float('nan'):.2e}")
    if not same:
        raise SystemExit("ours and the baseline picked different indices")
    if half:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "atoms.npy"
            np.save(path, atoms.astype(np.float16))
            mm = np.load(path, mmap_mode="r")
            pursuit(mm[:200], target, 5)
            t0 = time.perf_counter()
            res16 = pursuit(mm, target, k)
            t16 = time.perf_counter() - t0
            ref16 = pursuit(np.asarray(mm, dtype=np.float32), target, k)
            print(f"ours, float16 memmap:                {t16:8.2f} s  same indices as float32 "
                  f"of the same values: {np.array_equal(res16.indices, ref16.indices)}")
            del mm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--n2", type=int, default=4000)
    p.add_argument("--k2", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-case2", action="store_true")
    args = p.parse_args()
    run_case(args.n, args.d, args.k, args.seed, half=True)
    if not args.skip_case2:
        run_case(args.n2, args.d, args.k2, args.seed + 1, half=False)


if __name__ == "__main__":
    main()
