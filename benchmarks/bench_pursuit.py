"""Benchmark ``curation.pursuit``: scipy NNLS baseline, scikit-learn OMP, and a 1M-row scale run.

    python benchmarks/bench_pursuit.py [--n N --d D --k K] [--n2 N --k2 K] [--seed S]
    python benchmarks/bench_pursuit.py --sklearn [--sk-n 100000 --sk-d 1024 --sk-k 1000]
    python benchmarks/bench_pursuit.py --scale [--scale-n 1000000 --scale-d 512 --scale-k 400
                                       --shards 16 --workers 2 --refresh 8 --tmp DIR]

Default (quick): case 1 (``--n/--d/--k``, default 20000 x 1024, k=200) and case 2
(``--n2/--k2``, default 4000 x 1024, k=600: a large budget on a smaller pool). The baseline is
the same greedy rule (scores in float64 BLAS, argmax, then ``scipy.optimize.nnls`` refit on all
active atoms plus the new one, from scratch every step), run in this process: the reference the
tests check ``pursuit`` against (``tests/reference.py``). The defaults were chosen so the
baseline finishes well under 60 s per case on a 2-core machine; larger sizes run it as is (no
extrapolation). Ours is timed after a warm-up call that JIT-compiles the kernels. Both must
pick the same indices. Case 1 is also run from a float16 memmap (ours only).

``--sklearn``: ours in unconstrained mode against ``sklearn.linear_model.orthogonal_mp`` (its
fastest configuration: float32 Fortran-ordered atoms, ``copy_X=False``; float64 is run too) on
unit-norm atoms whose float16 values all read (sklearn as float32/float64 of the same values).
Reported: wall time, the speed-up, overlap of the selected sets and the residual ratio; ours
exactly (``refresh=1``) and lazily (``refresh`` = 4, 8, 16), with the lazy runs' residuals
also compared to the exact path at several step counts.

``--scale``: a float16 ``.npy`` of ``--scale-n`` x ``--scale-d`` is written in chunks (so
generating it does not need the RAM) and selected from by ``sharded_pursuit`` over
``MappedRows`` (shards of the file, mapped by each task only while it reads them) on a Dask
``LocalCluster`` of ``--workers`` single-threaded processes (``--workers 0``: in this process).
Reported: wall time, peak RSS of this process and of each worker next to the file's size, and
on the first ``--check-n`` rows the sharded result against unsharded ``pursuit``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import peak_rss_mib, reset_peak_rss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.pursuit import MappedRows, pursuit, sharded_pursuit  # noqa: E402
from tests.reference import reference_pursuit  # noqa: E402


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
    ref = reference_pursuit(atoms, target, k)
    idx, w, rnorm = ref.indices, ref.weights, float(ref.residual_norms[-1])
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


def sklearn_case(n: int, d: int, k: int, seed: int, refreshes: tuple[int, ...]) -> None:
    """Ours (unconstrained) vs scikit-learn's orthogonal_mp on the same float16 values."""
    from sklearn.linear_model import orthogonal_mp

    atoms, target = make_data(n, d, seed)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    # OMP's path does not depend on the target's scale; sklearn in float32 stops early once a
    # pick's inner product with the target squared is below float32 epsilon, so scale it up.
    target *= 1000.0 / np.linalg.norm(target)
    half = atoms.astype(np.float16)
    del atoms
    b_norm = np.linalg.norm(target)
    print(f"\n== ours vs sklearn orthogonal_mp, unconstrained: n={n} d={d} k={k} "
          f"(float16 atoms {half.nbytes / 2**20:.0f} MiB; sklearn reads them as float32)")
    sk = {}
    for dtype in (np.float32, np.float64):
        X = np.asfortranarray(half.T, dtype=dtype)  # (d, n): sklearn's layout, no copy inside
        t0 = time.perf_counter()
        coef = orthogonal_mp(X, target.astype(dtype), n_nonzero_coefs=k, copy_X=False)
        t_sk = time.perf_counter() - t0
        del X
        support = np.flatnonzero(coef)
        res = np.linalg.norm(target - half[support].T.astype(np.float64) @ coef[support])
        sk[np.dtype(dtype).name] = (t_sk, support, res)
        print(f"sklearn orthogonal_mp ({np.dtype(dtype).name} BLAS):   {t_sk:8.2f} s  "
              f"picks={len(support)}  rel.residual={res / b_norm:.3e}")
    # The baseline: float64, unless float32 made every pick too (in float32 the Cholesky
    # update can declare a pick linearly dependent and stop early, far from the residual).
    name = "float32" if len(sk["float32"][1]) == k else "float64"
    t_sk, sk_support, sk_res = sk[name]
    print(f"baseline: sklearn {name}")
    pursuit(half[:300], target, 5, nonnegative=False)  # warm-up: JIT compile (or load cache)
    exact = None
    for refresh in (1, *refreshes):
        t0 = time.perf_counter()
        # sklearn scores raw inner products; the float16 rows are unit-norm only to ~1e-3
        ours = pursuit(half, target, k, nonnegative=False, normalize=False, tol=0.0,
                       refresh=refresh)
        t = time.perf_counter() - t0
        res = ours.residual_norms[-1]
        overlap = len(np.intersect1d(ours.indices, sk_support)) / max(1, len(sk_support))
        label = "exact, refresh=1" if refresh == 1 else f"lazy, refresh={refresh}"
        others = "  ".join(f"{sk[o][0] / t:.1f}x vs {o}" for o in sk)
        print(f"ours ({label + '):':17s} {t:8.2f} s  picks={len(ours.indices)}  "
              f"rel.residual={res / b_norm:.3e}  speed-up {t_sk / t:.1f}x ({others})  "
              f"residual ratio {res / sk_res:.4f}  overlap {overlap:.3f}  passes={ours.passes}")
        if refresh == 1:
            exact = ours
            continue
        steps = [s for s in (k // 10, k // 4, k // 2, 3 * k // 4, k) if s <= len(ours.indices)]
        ratios = "  ".join(f"{s}: {ours.residual_norms[s - 1] / exact.residual_norms[s - 1]:.3f}"
                           for s in steps)
        print(f"    residual / exact residual after that many steps: {ratios}")


def write_atoms(path: Path, n: int, d: int, seed: int, chunk: int = 20_000) -> np.ndarray:
    """Gradient-like float16 atoms appended chunk by chunk to the ``.npy`` at ``path`` (plain
    writes, no mapping, so memory stays at one chunk); returns a target.

    Atoms: non-negative loadings on a rank-32 basis plus noise; the target: the mean of
    held-out rows whose loadings may be negative, so it lies partly outside the atoms' cone and
    the non-negative residual does not vanish.
    """
    rng = np.random.default_rng(seed)
    rank = 32
    basis = rng.standard_normal((rank, d)) / np.sqrt(d)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f2", "fortran_order": False,
                                                 "shape": (n, d)})
        for start in range(0, n, chunk):
            rows = min(chunk, n - start)
            block = np.abs(rng.standard_normal((rows, rank))) @ basis \
                + 0.5 * rng.standard_normal((rows, d)) / np.sqrt(d)
            f.write(block.astype("<f2").tobytes())
    held = (rng.standard_normal((200, rank)) + 0.5) @ basis \
        + 0.5 * rng.standard_normal((200, d)) / np.sqrt(d)
    return held.mean(axis=0)


def scale_case(n: int, d: int, k: int, shards: int, workers: int, refresh: int, check_n: int,
               seed: int, tmp: str | None) -> None:
    """Sharded pursuit over a float16 file of n x d rows, mapped per task."""
    with tempfile.TemporaryDirectory(dir=tmp) as directory:
        path = Path(directory) / "atoms.npy"
        t0 = time.perf_counter()
        target = write_atoms(path, n, d, seed)
        size = path.stat().st_size / 2**20
        print(f"\n== scale: n={n} d={d} k={k}, float16 file {size:.0f} MiB written in "
              f"{time.perf_counter() - t0:.1f} s; peak RSS so far {peak_rss_mib():.0f} MiB")
        atoms = [MappedRows(str(path))]
        options = {"shards": shards, "refresh": refresh}
        pursuit(np.load(path, mmap_mode="r")[:300], target, 5)  # warm-up: JIT compile here
        if workers:
            from distributed import Client, LocalCluster

            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                client.run(pursuit, np.ones((300, 4), np.float16) + np.eye(300, 4,
                           dtype=np.float16), np.ones(4), 2)  # warm-up in the workers
                client.run(reset_peak_rss)
                reset_peak_rss()
                t0 = time.perf_counter()
                result = sharded_pursuit(atoms, target, k, scheduler=client, **options)
                wall = time.perf_counter() - t0
                worker_rss = client.run(peak_rss_mib)
            where = f"Dask LocalCluster, {workers} single-threaded worker processes"
        else:
            reset_peak_rss()
            t0 = time.perf_counter()
            result = sharded_pursuit(atoms, target, k, **options)
            wall = time.perf_counter() - t0
            worker_rss = {}
            where = "in this process (numba threads)"
        b_norm = np.linalg.norm(target)
        print(f"sharded pursuit ({shards} shards, refresh={refresh}, {where}): {wall:.1f} s, "
              f"{len(result.indices)} picks, {result.passes} passes, rel.residual "
              f"{result.residual_norms[-1] / b_norm:.4f}")
        rss = "  ".join(f"worker {i}: {v:.0f}" for i, v in enumerate(worker_rss.values()))
        print(f"peak RSS during the pursuit (MiB): this process {peak_rss_mib():.0f}  {rss}   "
              f"(file {size:.0f} MiB)")
        # Sharding splits the passes only: on a smaller pool it must equal unsharded pursuit;
        # the lazy refresh is compared to the exact rule there too.
        small = MappedRows(str(path), 0, check_n)
        t0 = time.perf_counter()
        exact = pursuit(small, target, k)
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        lazy = pursuit(small, target, k, refresh=refresh)
        t_lazy = time.perf_counter() - t0
        split = sharded_pursuit(small, target, k, shards=shards, refresh=refresh)
        print(f"first {check_n} rows: sharded ({shards}) == unsharded pursuit with the same "
              f"refresh: {np.array_equal(split.indices, lazy.indices)} (residual ratio "
              f"{split.residual_norms[-1] / lazy.residual_norms[-1]:.6f}); refresh={refresh} "
              f"vs exact: residual ratio {lazy.residual_norms[-1] / exact.residual_norms[-1]:.4f}, "
              f"overlap {len(np.intersect1d(lazy.indices, exact.indices)) / len(exact.indices):.3f}, "
              f"{t_exact:.1f} s exact vs {t_lazy:.1f} s lazy")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--n2", type=int, default=4000)
    p.add_argument("--k2", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-case2", action="store_true")
    p.add_argument("--skip-scipy", action="store_true", help="skip the two scipy cases")
    p.add_argument("--sklearn", action="store_true", help="run the sklearn OMP comparison")
    p.add_argument("--sk-n", type=int, default=100_000)
    p.add_argument("--sk-d", type=int, default=1024)
    p.add_argument("--sk-k", type=int, default=1000)
    p.add_argument("--scale", action="store_true", help="run the 1M-row sharded scale case")
    p.add_argument("--scale-n", type=int, default=1_000_000)
    p.add_argument("--scale-d", type=int, default=512)
    # at most d atoms can be active in a non-negative fit (Caratheodory): k below d
    p.add_argument("--scale-k", type=int, default=400)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="Dask workers (0: in this process)")
    p.add_argument("--refresh", type=int, default=8)
    p.add_argument("--check-n", type=int, default=100_000)
    p.add_argument("--tmp", default=None, help="directory for the scale case's file")
    args = p.parse_args()
    if not args.skip_scipy:
        run_case(args.n, args.d, args.k, args.seed, half=True)
        if not args.skip_case2:
            run_case(args.n2, args.d, args.k2, args.seed + 1, half=False)
    if args.sklearn:
        sklearn_case(args.sk_n, args.sk_d, args.sk_k, args.seed, (4, 8, 16))
    if args.scale:
        scale_case(args.scale_n, args.scale_d, args.scale_k, args.shards, args.workers,
                   args.refresh, args.check_n, args.seed, args.tmp)


if __name__ == "__main__":
    main()
