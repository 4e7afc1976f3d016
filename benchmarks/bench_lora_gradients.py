"""Benchmark per-example LoRA gradients of the causal-LM proxy: ours against the LESS way.

    python benchmarks/bench_lora_gradients.py [--threads 1] [--examples 64] [--repeats 3]

Model: the ``causal-lm`` proxy at its default size (Llama architecture, 2 layers, hidden 128,
128-token window, LoRA rank 8 on q_proj and v_proj; 8,192 adapter parameters), with a BPE
tokenizer trained on real 20 Newsgroups documents, which are also the examples.

- ours: ``vmap(grad)`` over the adapter parameters in batches of 32, as the datastore computes
  them (``per_example_gradient_blocks`` with the next-token loss), with SDPA attention;
- ours, eager attention: the same with ``attn_implementation="eager"``, which has batching
  rules under ``vmap`` where SDPA falls back to a loop (measured here rather than assumed);
- baseline (LESS): one forward and ``backward()`` per example, adapter ``.grad`` concatenated.

Prints examples/s of each and the ratio, and the largest difference between the gradients.
Timings are the fastest of ``--repeats`` interleaved runs (``benchmarks/_common.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.demo_data import newsgroups_frame  # noqa: E402
from curation.gradients import per_example_gradient_blocks  # noqa: E402
from curation.proxies.causal_lm import (  # noqa: E402
    LMSpec,
    adapter_names,
    build_model,
    encode,
    lm_example_loss,
    train_tokenizer,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fastest  # noqa: E402


def less_loop(model, names, ids, targets) -> torch.Tensor:
    """Baseline: one forward/backward per example, adapter gradients concatenated (LESS)."""
    params = dict(model.named_parameters())
    rows = []
    for x, y in zip(ids, targets, strict=True):
        model.zero_grad()
        lm_example_loss(model(input_ids=x[None]), y).backward()
        rows.append(torch.cat([params[n].grad.reshape(-1) for n in names]))
    return torch.stack(rows)


def ours(model, names, ids, targets, batch: int = 32) -> torch.Tensor:
    return torch.cat([torch.cat(per_example_gradient_blocks(
        model, names, ids[i:i + batch], targets[i:i + batch], lm_example_loss), dim=1)
        for i in range(0, len(ids), batch)])


def adapted_model(spec: LMSpec, vocab: int, attention: str):
    model = build_model(spec, vocab, seed=0)
    model.base_model.model.config._attn_implementation = attention
    with torch.no_grad():  # trained adapters: B is non-zero, so every gradient is
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    texts = newsgroups_frame("train")["text"].iloc[:2000].tolist()
    spec = LMSpec()
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    ids, targets = (torch.from_numpy(a) for a in encode(tokenizer, texts[:args.examples],
                                                        spec.max_length))
    models = {a: adapted_model(spec, tokenizer.get_vocab_size(), a) for a in ("sdpa", "eager")}
    names = adapter_names(models["sdpa"])
    reference = less_loop(models["sdpa"], names, ids, targets)
    difference = max(float((ours(m, names, ids, targets) - reference).abs().max())
                     for m in models.values())
    seconds = fastest({
        "ours (vmap, sdpa)": lambda: ours(models["sdpa"], names, ids, targets),
        "ours (vmap, eager)": lambda: ours(models["eager"], names, ids, targets),
        "LESS loop": lambda: less_loop(models["sdpa"], names, ids, targets),
    }, args.repeats)
    print(f"{args.examples} examples x {spec.max_length} tokens, {reference.shape[1]} adapter "
          f"parameters, {args.threads} thread(s); max |ours - loop| = {difference:.2e} "
          f"(largest gradient entry {float(reference.abs().max()):.2e})")
    for name, s in seconds.items():
        print(f"{name:20s} {args.examples / s:8.1f} examples/s")
    loop = seconds["LESS loop"]
    print(f"speed-up over the LESS loop: sdpa {loop / seconds['ours (vmap, sdpa)']:.2f}x, "
          f"eager {loop / seconds['ours (vmap, eager)']:.2f}x")


if __name__ == "__main__":
    main()
