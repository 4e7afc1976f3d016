"""Benchmark ``sharded_pursuit`` on Dask: 1 worker vs 2 workers vs in this process, same store.

    python benchmarks/bench_dask.py [--n 1000000 --d 512 --k 400 --shards 16 --refresh 8]
                                    [--workers 1,2] [--tmp DIR]

A float16 ``.npy`` of n x d gradient-like rows is written in chunks (``bench_pursuit``'s
generator) and selected from three ways with the same options: in this process (rows mapped
per pass, Numba on every core), and on a Dask ``LocalCluster`` of 1 and of 2 single-threaded
worker processes, whose shard holders read their rows into memory once and keep them for the
whole pursuit. Timed: the whole call, holder start-up (reading the rows) included; the
cluster's start and a JIT warm-up in each worker are not. Printed: wall time, passes, the
ratios, each worker's CPU seconds during the pursuit (on a machine shared with other work the
wall time of two workers depends on the cores they get; the CPU split shows the work divides),
and whether every selection equals the in-process one (it must).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_pursuit import write_atoms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.pursuit import MappedRows, pursuit, sharded_pursuit  # noqa: E402


def warm_up() -> None:
    """JIT-compile (or load) the kernels this process or worker uses."""
    rows = np.ones((300, 4), np.float16) + np.eye(300, 4, dtype=np.float16)
    pursuit(rows, np.ones(4), 2)


def on_cluster(workers: int, atoms, target, k: int, options: dict):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, \
            Client(cluster, direct_to_workers=True) as client:
        client.run(warm_up)
        before = client.run(time.process_time)
        start = time.perf_counter()
        result = sharded_pursuit(atoms, target, k, scheduler=client, **options)
        wall = time.perf_counter() - start
        after = client.run(time.process_time)
        return result, wall, [after[w] - before[w] for w in sorted(after)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--k", type=int, default=400)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--refresh", type=int, default=8)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default=None, help="directory for the store file")
    args = p.parse_args()
    options = {"shards": args.shards, "refresh": args.refresh}
    with tempfile.TemporaryDirectory(dir=args.tmp) as directory:
        path = Path(directory) / "atoms.npy"
        target = write_atoms(path, args.n, args.d, args.seed)
        print(f"store: n={args.n} d={args.d} float16, {path.stat().st_size / 2**20:.0f} MiB; "
              f"k={args.k}, shards={args.shards}, refresh={args.refresh}")
        atoms = [MappedRows(str(path))]
        warm_up()
        start = time.perf_counter()
        local = sharded_pursuit(atoms, target, args.k, **options)
        walls = {"in-process": time.perf_counter() - start}
        results, cpu = {"in-process": local}, {"in-process": []}
        for workers in (int(w) for w in args.workers.split(",")):
            name = f"dask {workers} worker{'s' if workers > 1 else ''}"
            results[name], walls[name], cpu[name] = on_cluster(workers, atoms, target, args.k,
                                                               options)
        for name, result in results.items():
            same = np.array_equal(result.indices, local.indices) and np.array_equal(
                result.weights, local.weights)
            busy = ", ".join(f"{c:.1f}" for c in cpu[name])
            print(f"{name:<16} {walls[name]:7.1f} s  {len(result.indices)} picks, "
                  f"{result.passes} passes, equal to in-process: {same}"
                  + (f"; worker CPU s: {busy}" if busy else ""))
        names = list(walls)
        for a, b in zip(names[1:], names[2:], strict=False):
            print(f"speed-up {b} over {a}: {walls[a] / walls[b]:.2f}x")
        for name in names[1:]:
            print(f"{name} / in-process wall time: {walls[name] / walls['in-process']:.2f}")


if __name__ == "__main__":
    main()
