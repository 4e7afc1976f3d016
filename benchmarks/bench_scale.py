"""Pursuit at scale: exact passes against faiss inner-product search on float16 stores on disk.

    python benchmarks/bench_scale.py [--n 1000000 10000000] [--d 1024] [--k 600]
                                     [--exact-max 1000000] [--dir DIR] [--threads 1] [--keep]
                                     [--reuse]

For each ``n`` a float16 ``.npy`` store of n x d is written in chunks to ``--dir`` (a temp
directory by default; never held in memory) with the gradient-like model of
``bench_pursuit.py`` (low-rank class structure plus noise; the target is the mean of 50 rows
plus noise), then selected from, each run in its own child process so that its peak RSS is its
own (above ``--exact-max`` the noise comes from a shuffled bank, see ``write_store``):
``pursuit(..., search="faiss")`` (index build included, and reported apart) and, where
``n <= --exact-max``, exact pursuit. Reported: wall time, index build time, peak RSS next to the
store size, and against exact the support overlap, the relative residuals and the ratio of the
wall times (exact / faiss). The store is deleted afterwards unless ``--keep``. ``--reuse``
(with ``--dir``): stores are kept in ``--dir`` itself and one already there (same name, same
size) is selected from instead of being written again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import peak_rss_mib, reset_peak_rss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CHUNK = 65536
_RANK = 32


def write_store(path: Path, n: int, d: int, seed: int, noise_bank: bool) -> np.ndarray:
    """Write the n x d float16 store chunk by chunk; return the float64 target.

    ``noise_bank``: each chunk's noise is one fixed chunk of Gaussian noise with its rows
    shuffled, sign-flipped and rolled by a random shift, instead of fresh draws: drawing 10^10
    normals costs more CPU than the selection being measured.
    """
    basis = np.random.default_rng(seed).standard_normal((_RANK, d)) / np.sqrt(d)
    bank = np.random.default_rng([seed, n, 1]).standard_normal((_CHUNK, d)).astype(np.float32) \
        if noise_bank else None
    # Plain writes, not a writable memory map: a map's dirty pages count as this process's
    # resident memory until written back (7.6 GB at 7 GB written on a busy machine).
    out = open(path, "wb")  # noqa: SIM115 - closed after the loop
    np.lib.format.write_array_header_1_0(out, {"descr": np.dtype(np.float16).str,
                                               "fortran_order": False, "shape": (n, d)})
    for start in range(0, n, _CHUNK):
        rows = min(_CHUNK, n - start)
        rng = np.random.default_rng([seed, start])
        block = rng.standard_normal((rows, _RANK)) @ basis
        if bank is None:
            block += 0.5 * rng.standard_normal((rows, d)) / np.sqrt(d)
        else:
            noise = np.roll(bank[rng.permutation(_CHUNK)[:rows]], int(rng.integers(d)), axis=1)
            noise *= rng.choice(np.float32([-0.5, 0.5]), size=(rows, 1)) / np.sqrt(d)
            block = block.astype(np.float32) + noise
        out.write(block.astype(np.float16).tobytes())
    out.close()
    rng = np.random.default_rng([seed, n])
    picked = np.sort(rng.choice(n, 50, replace=False))
    store = np.load(path, mmap_mode="r")
    target = store[picked].astype(np.float64).mean(axis=0)
    del store
    return target + 0.05 * rng.standard_normal(d) / np.sqrt(d)


def child(args: argparse.Namespace) -> None:
    """One timed selection in this process; prints a JSON line."""
    import faiss

    from curation.pursuit import MappedRows, pursuit
    from curation.pursuit.atoms import AtomSource
    from curation.search import search_backend

    faiss.omp_set_num_threads(args.threads)
    target = np.load(args.target)
    atoms = MappedRows(args.store)
    pursuit(np.load(args.store, mmap_mode="r")[:200], target, 5)  # JIT compile / cache load
    reset_peak_rss()
    start = time.perf_counter()
    index, build_s = None, 0.0
    if args.child != "exact":
        index = search_backend(args.child).build(AtomSource(atoms))
        build_s = time.perf_counter() - start
    result = pursuit(atoms, target, args.k[0], search=args.child, index=index)
    wall = time.perf_counter() - start
    np.save(args.out, result.indices)
    print(json.dumps({"wall_s": wall, "build_s": build_s, "peak_rss_mib": peak_rss_mib(),
                      "picks": len(result.indices), "search_info": result.search_info,
                      "rel_residual": result.residual_norms[-1] / np.linalg.norm(target)}))


def run_child(search: str, store: Path, target: Path, k: int, threads: int, out: Path) -> dict:
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", search, "--store", str(store), "--target",
         str(target), "--k", str(k), "--threads", str(threads), "--out", str(out)],
        env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{search} run failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(n: int, d: int, k: int, exact_max: int, directory: Path, threads: int, seed: int,
          keep: bool, reuse: bool = False) -> None:
    store, target_path = directory / f"store-{n}x{d}.npy", directory / f"target-{n}x{d}.npy"
    start = time.perf_counter()
    size = 128 + 2 * n * d  # the .npy header is 128 bytes
    if reuse and store.exists() and store.stat().st_size == size and target_path.exists():
        written = "reused"
    else:
        np.save(target_path, write_store(store, n, d, seed, noise_bank=n > exact_max))
        written = f"written in {time.perf_counter() - start:.0f} s"
    size_mib = store.stat().st_size / 2**20
    print(f"\n== n={n:,} d={d} k={k}: float16 store {size_mib:,.0f} MiB {written} ({store})",
          flush=True)
    try:
        runs = {}
        for search in ("faiss", "exact") if n <= exact_max else ("faiss",):
            runs[search] = run_child(search, store, target_path, k, threads,
                                     directory / f"{search}-{n}.npy")
            r = runs[search]
            print(f"{search:5s}: {r['wall_s']:8.1f} s (index build {r['build_s']:.1f} s)  "
                  f"peak RSS {r['peak_rss_mib']:,.0f} MiB = {r['peak_rss_mib'] / size_mib:.2f}"
                  f" x store  picks={r['picks']}  rel.residual={r['rel_residual']:.4f}"
                  f"  {r['search_info'] or ''}", flush=True)
        if "exact" in runs:
            ours = np.load(directory / f"faiss-{n}.npy")
            exact = np.load(directory / f"exact-{n}.npy")
            overlap = len(np.intersect1d(ours, exact)) / max(len(exact), 1)
            print(f"ratio exact/faiss: {runs['exact']['wall_s'] / runs['faiss']['wall_s']:.1f}x"
                  f"  support overlap {overlap:.3f}  residual faiss/exact "
                  f"{runs['faiss']['rel_residual'] / runs['exact']['rel_residual']:.3f}")
            # Per-step costs for the estimate in docs/scaling.md.
            steps = max(runs["exact"]["picks"], 1)
            print(f"per step: exact {runs['exact']['wall_s'] / steps * 1e3:.1f} ms, faiss "
                  f"{(runs['faiss']['wall_s'] - runs['faiss']['build_s']) / steps * 1e3:.1f} ms"
                  f" (+ build {runs['faiss']['build_s'] / n * 1e6:.1f} us per row)")
        else:
            r, steps = runs["faiss"], max(runs["faiss"]["picks"], 1)
            print(f"per step: faiss {(r['wall_s'] - r['build_s']) / steps * 1e3:.1f} ms "
                  f"(+ build {r['build_s'] / n * 1e6:.1f} us per row)")
    finally:
        if not (keep or reuse):
            store.unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--k", type=int, nargs="+", default=[600],
                   help="budget per n (one value: the same for every n)")
    p.add_argument("--exact-max", type=int, default=1_000_000,
                   help="largest n that exact pursuit is run on")
    p.add_argument("--dir", type=Path, default=None, help="where the stores are written")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the stores")
    p.add_argument("--reuse", action="store_true",
                   help="keep the stores in --dir and select from ones already there")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--store", default=None, help=argparse.SUPPRESS)
    p.add_argument("--target", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    ks = args.k * len(args.n) if len(args.k) == 1 else args.k
    if len(ks) != len(args.n):
        raise SystemExit("--k takes one value or one per --n")
    if args.reuse:
        if args.dir is None:
            raise SystemExit("--reuse needs --dir")
        args.dir.mkdir(parents=True, exist_ok=True)
        for n, k in zip(args.n, ks, strict=True):
            bench(n, args.d, k, args.exact_max, args.dir, args.threads, args.seed, True, True)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n, k in zip(args.n, ks, strict=True):
            bench(n, args.d, k, args.exact_max, Path(tmp), args.threads, args.seed, args.keep)


if __name__ == "__main__":
    main()
