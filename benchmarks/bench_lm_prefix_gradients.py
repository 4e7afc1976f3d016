"""Benchmark per-example LoRA gradient features on SmolLM2-135M: ours against the LESS loop.

    python benchmarks/bench_lm_prefix_gradients.py [--examples 64] [--checkpoints 4]

Model: the named base ``smollm2-135m`` (30 layers, hidden 576, vocabulary 49,152) with the
adapters it is used with here (``curation.lm_bases``: rank 8 on q/k/v/o of the top 4 layers);
``--checkpoints`` copies with different adapter values stand in for a warm-up's checkpoints.
Examples: real instruction rows of the instruct scenario's pool, through the chat template,
``--max-length`` tokens.

- ours: ``LMProxy.batch_gradients`` as the datastore computes features: the frozen prefix once
  per example for all checkpoints, then per checkpoint one batched backward through the top
  layers with logits only at response positions and per-example adapter gradients by
  ``einsum`` (``curation.proxies.lm_prefix``), batches of 32; the prefix
  cache is emptied before each timed run, so nothing is carried between runs;
- LESS loop: per checkpoint, per example, one full forward and ``backward()``, the adapter
  ``.grad`` read out (how LESS computes its training-gradient features).

Prints examples/s of each (a feature = one example's gradients at every checkpoint), the ratio,
the largest relative difference between the two, and the peak resident memory of ours in fresh
child processes (one checkpoint, the prefix cache off) at batch 8 and 32 and at 2x the
examples: it grows with the batch, not with the number of examples.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.demo_data import ScenarioConfig, build_scenario  # noqa: E402
from curation.lm_bases import adapter_options, resolve_lm_base  # noqa: E402
from curation.pool import validate_table  # noqa: E402
from curation.proxies import lm_prefix  # noqa: E402
from curation.proxies.causal_lm import (  # noqa: E402
    LMProxy,
    LMSpec,
    adapter_names,
    build_model,
    lm_example_loss,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib, reset_peak_rss  # noqa: E402


def checkpoint_models(spec: LMSpec, count: int) -> list:
    models = []
    for c in range(count):
        model = build_model(spec, 0)
        with torch.no_grad():  # trained adapters: B is non-zero, so every gradient is
            generator = torch.Generator().manual_seed(100 + c)
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.normal_(0, 0.02, generator=generator)
        models.append(model.eval())
    return models


def ours(models, names, ids, targets, batch: int = 32) -> list[torch.Tensor]:
    """Per checkpoint, (examples, adapter parameters) gradients."""
    lm_prefix._CACHES.clear()
    per_checkpoint = [[] for _ in models]
    for start in range(0, len(ids), batch):
        blocks = LMProxy.batch_gradients(models, names, ids[start:start + batch],
                                         targets[start:start + batch])
        for c, checkpoint in enumerate(blocks):
            per_checkpoint[c].append(torch.cat(checkpoint, dim=1))
    return [torch.cat(rows) for rows in per_checkpoint]


def less_loop(models, names, ids, targets) -> list[torch.Tensor]:
    out = []
    for model in models:
        prefix, model.frozen_prefix = model.frozen_prefix, None  # the plain full model
        params = dict(model.named_parameters())
        rows = []
        for x, y in zip(ids, targets, strict=True):
            model.zero_grad()
            lm_example_loss(model(input_ids=x[None]), y).backward()
            rows.append(torch.cat([params[n].grad.reshape(-1) for n in names]))
        model.frozen_prefix = prefix
        out.append(torch.stack(rows))
    return out


def memory_probe(examples: int, batch: int, max_length: int) -> float:
    """Peak RSS (MiB) of a child process computing ours over ``examples`` rows."""
    env = {**os.environ, "CURATION_PREFIX_CACHE_MB": "0"}
    out = subprocess.run([sys.executable, __file__, "--probe", str(batch), "--examples",
                          str(examples), "--max-length", str(max_length)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def inputs(examples: int, max_length: int, checkpoints: int):
    base = "smollm2-135m"
    spec = LMSpec(base_path=str(resolve_lm_base(base)), max_length=max_length,
                  **adapter_options(base))
    tables = build_scenario(ScenarioConfig("instruct", pool_size=examples, test_size=1,
                                           target_size=1))
    models = checkpoint_models(spec, checkpoints)
    pool = validate_table(tables.pool, source="pool", require_label=False)
    ids, targets = (torch.from_numpy(a)
                    for a in LMProxy(spec, Path(spec.base_path), 0).encode(pool))
    return spec, models, adapter_names(models[0]), ids, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probe", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.probe:
        spec, models, names, ids, targets = inputs(args.examples, args.max_length, 1)
        reset_peak_rss()
        ours(models, names, ids, targets, args.probe)
        print(peak_rss_mib())
        return
    spec, models, names, ids, targets = inputs(args.examples, args.max_length, args.checkpoints)

    start = time.perf_counter()
    mine = ours(models, names, ids, targets)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    loop = less_loop(models, names, ids, targets)
    loop_s = time.perf_counter() - start
    relative = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(mine, loop,
                                                                              strict=True))
    memory = {(n, b): memory_probe(n, b, args.max_length)
              for n, b in ((16, 8), (32, 8), (32, 32))}
    tokens = float(lm_prefix.sequence_lengths(targets).mean())
    print(f"smollm2-135m, {args.examples} instruction examples (<= {args.max_length} tokens, "
          f"{tokens:.0f} real on average), {args.checkpoints} checkpoints, "
          f"{mine[0].shape[1]:,} adapter parameters (top {spec.lora_layers} of 30 layers), "
          f"{torch.get_num_threads()} thread(s)")
    print(f"ours (cached prefix)       {args.examples / ours_s:8.2f} examples/s ({ours_s:.1f} s)")
    print(f"LESS loop                  {args.examples / loop_s:8.2f} examples/s ({loop_s:.1f} s)")
    print(f"speed-up over the LESS loop: {loop_s / ours_s:.2f}x; max |ours - loop| / max |loop| "
          f"= {relative:.3g}")
    print("peak RSS of ours (1 checkpoint, cache off): " + ", ".join(
        f"{n} examples / batch {b}: {m:.0f} MiB" for (n, b), m in memory.items()))


if __name__ == "__main__":
    main()
