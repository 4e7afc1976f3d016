"""Benchmark per-example gradients, random projection and the datastore's memory, in one run.

    python benchmarks/bench_gradients.py [--threads 1] [--n-large 200000] [--n-small 50000]

(``--n-large 0`` skips part 3.)

1. Per-example gradients, examples/s: ours (``vmap(grad)`` over batches of 256, one block per
   parameter, as the datastore consumes them) against the LESS way (batch size 1: forward,
   ``backward()``, concatenate ``.grad``), on the same MLP proxy (64 -> 128 -> 10, 9,610
   parameters, warmed up) and the same real data (scikit-learn's 8x8 digits); the gradients
   of both are compared.
2. Projection to ``dim`` dims, examples/s: ours (``srht``; also our blockwise ``gaussian``)
   against a plain dense Rademacher projection in torch, TRAK's CPU ``BasicProjector``
   approach (a materialized +-1/sqrt(dim) matrix and one matmul; generating the matrix is not
   timed). Same gradients, same output dim; the distortion of each (``projection_distortion``
   on all pairs) at dims 256/512/1024 shows they are equally accurate.
3. Peak memory while building a datastore (defaults: 4 checkpoints, dim 1024, float16, shards
   of 8192) over synthetic 64-d features with an MLP proxy (64 -> 32 -> 10), for
   ``--n-small`` and ``--n-large`` examples, each build in a fresh subprocess reading
   ``/proc/self/status`` (VmHWM; and RssAnon sampled every 20 ms, which leaves out the pages
   of the memory-mapped inputs) after a small warm-up build. Bounded by the batch, not by n,
   if both sizes grow alike.

Timings take the fastest of many short runs in this process, ours and the baseline
interleaved under the same settings. Torch runs with ``--threads`` threads (default 1): on a
2-core machine shared with other work, OpenMP spin-waiting makes 2-thread timings swing by
5x, which would measure the neighbours rather than the code; the baseline's batch-of-one ops
do not use threads anyway.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.gradients import per_example_gradient_blocks, per_example_gradients  # noqa: E402
from curation.projectors import (  # noqa: E402
    GaussianProjector,
    HadamardProjector,
    projection_distortion,
)
from curation.proxies.classifier import ProxySpec, WarmupConfig, parameter_names, warmup  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fastest  # noqa: E402


def less_loop(model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Baseline: one forward/backward per example, gradients concatenated (LESS)."""
    params = dict(model.named_parameters())
    rows = []
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        rows.append(torch.cat([params[n].grad.reshape(-1) for n in names]))
    return torch.stack(rows)


class DenseRademacher:
    """TRAK's CPU BasicProjector approach: materialize a +-1/sqrt(dim) matrix, one matmul."""

    def __init__(self, in_dim: int, out_dim: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        bits = torch.randint(0, 2, (in_dim, out_dim), generator=generator, dtype=torch.int8)
        self.matrix = (bits.float() * 2 - 1) / math.sqrt(out_dim)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.matrix


def digits_proxy(work: Path):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    proxy = warmup(x, y.astype(np.int64), 10, work / "digits-proxy", ProxySpec("mlp", 128),
                   WarmupConfig(fraction=0.5, epochs=4, checkpoints=1, seed=0))
    model = proxy.load_model(proxy.checkpoints[-1])
    return model, torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


def part_gradients(model, x, y) -> torch.Tensor:
    names = parameter_names(model, "all")
    batch, loop_n = 256, 64

    def blocks() -> list[torch.Tensor]:
        with torch.no_grad():
            return per_example_gradient_blocks(model, names, x[:batch], y[:batch])

    def concatenated() -> torch.Tensor:
        with torch.no_grad():
            return per_example_gradients(model, names, x[:batch], y[:batch])

    t = fastest({"blocks": blocks, "concatenated": concatenated,
                 "loop": lambda: less_loop(model, names, x[:loop_n], y[:loop_n])}, repeats=30)
    rate_loop = loop_n / t["loop"]
    with torch.no_grad():
        grads = torch.cat([per_example_gradients(model, names, x[s:s + batch], y[s:s + batch])
                           for s in range(0, len(x), batch)])
    diff = (grads[:loop_n] - less_loop(model, names, x[:loop_n], y[:loop_n])).abs().max().item()
    print(f"\n== 1. per-example gradients: MLP 64-128-10 ({grads.shape[1]:,} parameters), "
          f"real 8x8 digits; examples/s, fastest of 30 interleaved runs")
    print(f"LESS loop (batch of 1, backward per example, {loop_n} examples): {rate_loop:9,.0f}")
    for name, label in (("blocks", "ours: vmap(grad), a batch of 256, one block per parameter"),
                        ("concatenated", "ours, blocks concatenated to one (256, n_params)")):
        rate = batch / t[name]
        print(f"{label + ':':62s} {rate:9,.0f}  {rate / rate_loop:5.1f}x")
    print(f"goal >= 10x (the datastore consumes the blocks). max |ours - loop| = {diff:.1e}")
    return grads


def part_projection(grads: torch.Tensor) -> None:
    n_params = grads.shape[1]
    batch = grads[:256].contiguous()
    print(f"\n== 2. projection of {len(batch)} real gradients ({n_params:,} -> dim), examples/s, "
          "fastest of 15 interleaved runs")
    print(f"{'dim':>5} {'dense Rademacher (TRAK)':>24} {'ours srht':>12} {'ratio':>6} "
          f"{'ours gaussian':>14} {'ratio':>6}")
    for dim in (256, 512, 1024):
        dense = DenseRademacher(n_params, dim)
        srht = HadamardProjector(n_params, dim)
        gauss = GaussianProjector(n_params, dim)
        for p in (dense, srht, gauss):
            p(batch[:64])  # warm-up: JIT, cached blocks
        t = fastest({name: (lambda p=p: p(batch)) for name, p in
                     (("dense", dense), ("srht", srht), ("gauss", gauss))}, repeats=15)
        t_dense, t_srht, t_gauss = t["dense"], t["srht"], t["gauss"]
        r = len(batch)
        print(f"{dim:5d} {r / t_dense:24,.0f} {r / t_srht:12,.0f} {t_dense / t_srht:5.1f}x "
              f"{r / t_gauss:14,.0f} {t_dense / t_gauss:5.1f}x")
    rows = grads.numpy()
    print(f"\ndistortion on {len(rows):,} gradients ({len(rows) * (len(rows) - 1) // 2:,} pairs), "
          "unit-normalized: inner-product |error| max / mean, relative norm |error| max")
    print(f"{'dim':>5} {'projector':>18} {'inner max':>10} {'inner mean':>11} {'norm max':>9}")
    for dim in (256, 512, 1024):
        for name, p in (("dense Rademacher", DenseRademacher(n_params, dim, seed=1)),
                        ("srht", HadamardProjector(n_params, dim, seed=1)),
                        ("gaussian", GaussianProjector(n_params, dim, seed=1))):
            d = projection_distortion(rows, p(grads).numpy())
            print(f"{dim:5d} {name:>18} {d['inner_max']:10.3f} {d['inner_mean']:11.4f} "
                  f"{d['norm_max']:9.3f}")


_CHILD = """
import json, sys, threading, time
import numpy as np
from _common import proc_status_bytes as status
from curation.datastore import DatastoreSpec, build_datastore
from curation.proxies.classifier import load_proxy

peak_anon = [0]
done = threading.Event()
def sample():
    while not done.is_set():
        peak_anon[0] = max(peak_anon[0], status("RssAnon"))
        time.sleep(0.02)
inputs = np.load(sys.argv[2], mmap_mode="r")
n = int(sys.argv[4])
labels = np.load(sys.argv[3])[:n]
proxy = load_proxy(sys.argv[1])
ids = [f"ex{i:07d}" for i in range(n)]
# A 512-example build first: loading the Numba kernels and torch.func's first call allocate
# memory once per process, whatever n is; measure the real build after it.
build_datastore(proxy, inputs[:512], labels[:512], ids[:512], sys.argv[5] + "-warmup",
                DatastoreSpec())
before, anon_before = status("VmRSS"), status("RssAnon")
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
start = time.perf_counter()
store = build_datastore(proxy, inputs[:n], labels, ids, sys.argv[5], DatastoreSpec())
seconds = time.perf_counter() - start
done.set(); sampler.join()
print(json.dumps({"before": before, "anon_before": anon_before, "hwm": status("VmHWM"),
                  "anon": peak_anon[0],
                  "seconds": seconds, "bytes": store.nbytes, "shards": len(store.manifest["shards"])}))
"""


def part_memory(work: Path, sizes: list[int], threads: int) -> None:
    n = max(sizes)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((10, 64)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    inputs = centers[labels] + rng.standard_normal((n, 64)).astype(np.float32)
    np.save(work / "inputs.npy", inputs)
    np.save(work / "labels.npy", labels)
    warmup(inputs[:20000], labels[:20000], 10, work / "proxy", ProxySpec("mlp", 32),
           WarmupConfig(fraction=0.25, epochs=4, checkpoints=4, seed=0))
    del inputs
    spec_text = "4 checkpoints x 1024 dims, float16, shards of 8192"
    print(f"\n== 3. peak memory building a datastore (MLP 64-32-10, 2,410 parameters; {spec_text})")
    print(f"{'examples':>9} {'RSS before':>11} {'peak RSS':>9} {'anon before':>12} "
          f"{'peak anon':>10} {'build anon':>11} {'store':>9} {'shards':>7} {'examples/s':>11}")
    env_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   "NUMBA_NUM_THREADS": str(threads)}
    mib = 2**20
    here = Path(__file__).resolve().parent
    # The child imports curation from the repository and _common from this directory.
    pythonpath = os.pathsep.join([str(here.parent), str(here)])
    for size in sorted(sizes):
        out = work / f"store-{size}"
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(work / "proxy"), str(work / "inputs.npy"),
             str(work / "labels.npy"), str(size), str(out)], capture_output=True, text=True,
            env={**os.environ, **env_threads, "PYTHONPATH": pythonpath}, check=False)
        if result.returncode != 0:
            raise SystemExit(f"datastore build of {size} examples failed:\n{result.stderr}")
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{size:9,d} {r['before'] / mib:9.0f}Mi {r['hwm'] / mib:7.0f}Mi "
              f"{r['anon_before'] / mib:10.0f}Mi {r['anon'] / mib:8.0f}Mi "
              f"{(r['anon'] - r['anon_before']) / mib:9.0f}Mi {r['bytes'] / mib:7.0f}Mi "
              f"{r['shards']:7d} {size / r['seconds']:11,.0f}")
    print(f"'before': after imports, proxy, ids, labels and a 512-example warm-up build (one-time "
          f"runtime set-up); 'build anon' = peak anonymous memory during the build minus that. "
          f"Peak RSS (VmHWM) also counts the warm-up and the pages of the memory-mapped inputs "
          f"({n * 64 * 4 / mib:.0f} MiB for {n:,} examples). For scale: a shard is "
          f"{8192 * 4 * 1024 * 2 / mib:.0f} MiB on disk, its float32 features "
          f"{8192 * 4 * 1024 * 4 / mib:.0f} MiB; one batch of 256 examples' gradients and "
          f"features ~{256 * 4 * (2410 + 1024) * 4 / mib:.0f} MiB.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-large", type=int, default=200_000)
    parser.add_argument("--n-small", type=int, default=50_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    started = time.perf_counter()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores, "
          f"load average {load}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, x, y = digits_proxy(work)
        grads = part_gradients(model, x, y)
        part_projection(grads)
        if args.n_large > 0:
            part_memory(work, [args.n_small, args.n_large], args.threads)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
