"""Distilled-set quality: examples per class x how the set is made, trained fresh and tested.

    python benchmarks/bench_distill.py [--scenario images] [--pool-size 3000]
        [--target-size 200] [--sizes 1,10,50] [--seeds 3] [--out DIR] [--work-dir DIR]

Data: a demo scenario (default ``images``: 3,000 real MNIST digits as the pool, 784 raw pixels,
a 200-digit target set, the remaining 1,800 digits as the test split). Rows of the table:

- ``random real + hard``: N random pool examples per class with one-hot labels;
- ``random real + soft``: the same examples with the expert's soft labels;
- ``GTP real + soft``: per class, the top-ranked members of a GTP selection (budget about 5N)
  whose target is that class's part of the target set (see ``gtp_ranking``), with the
  expert's soft labels;
- ``TM + soft``: trajectory matching initialized from the random examples, learning inputs,
  soft labels and the student learning rate.

Every cell is the mean ± std over whole-chain seeds (seed s picks the random examples, trains
the expert and the GTP proxy, seeds matching and the student's initialization). Students are
``curation.evaluate``'s trainer (linear softmax, L-BFGS, the same for every row); ``full`` is
the same trainer on the whole pool with hard labels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.datastore import DatastoreSpec  # noqa: E402
from curation.demo_data import ScenarioConfig, write_scenario  # noqa: E402
from curation.distill import (  # noqa: E402
    DistillConfig,
    distill,
    evaluate_distilled,
    storage_cost,
    train_expert,
    write_distilled,
)
from curation.embed import input_matrix  # noqa: E402
from curation.evaluate import EvalConfig, accuracy, evaluate_subset  # noqa: E402
from curation.io import write_atomic, write_json  # noqa: E402
from curation.pool import Pool, load_pool  # noqa: E402
from curation.proxies.classifier import WarmupConfig  # noqa: E402
from curation.selectors import make_selector  # noqa: E402
from curation.workflow import GradientSettings, n_classes_of, run_selection  # noqa: E402

ROWS = {
    "random real + hard": {"labels": "hard", "method": "real"},
    "random real + soft": {"labels": "soft", "method": "real"},
    "GTP real + soft": {"labels": "soft", "method": "real", "gtp": True},
    "TM + soft": {"labels": "soft", "method": "tm"},
}


def gtp_ranking(pool: Pool, target: Pool, per_class: int, seed: int,
                work_dir: Path) -> np.ndarray:
    """Pool rows ranked per class by GTP with per-class targets, for ``per_class`` picks.

    One pursuit per class c targets the mean gradient trajectory of the target set's class-c
    examples; its class-c picks in pursuit order come first for class c. The budget is the
    smallest of 5N, 10N, 20N, ... that yields N class-c picks, since pursuit drops early atoms
    that later picks explain, so a larger budget's first picks are not a smaller budget's. A
    single pursuit on the whole target would spend its budget on the classes the mean target
    gradient points at and leave others short of N members.
    """
    settings = GradientSettings(warmup=WarmupConfig(seed=seed),
                                datastore=DatastoreSpec(dim=512, seed=seed))
    ranked = []
    for c in np.unique(pool.labels):
        target_c = target.take(np.flatnonzero(target.labels == c))
        budget = 5 * per_class
        while True:
            selection, _ = run_selection(pool, target_c, make_selector("gtp"),
                                         min(budget, len(pool)), work_dir, settings)
            rows = selection.indices[pool.labels[selection.indices] == c]
            if len(rows) >= per_class or budget >= len(pool):
                break
            budget *= 2
        ranked.append(rows)
    return np.concatenate(ranked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="images")
    parser.add_argument("--pool-size", type=int, default=3000)
    parser.add_argument("--target-size", type=int, default=200)
    parser.add_argument("--sizes", default="1,10,50", help="examples per class")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distill"))
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="cache for experts and gradient stores ($CURATION_HOME/work)")
    args = parser.parse_args()
    # Every model here is tiny: one thread avoids synchronization overhead on shared cores.
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    work_dir = args.work_dir or Path(os.environ.get("CURATION_HOME", ".curation")) / "work"
    started = time.perf_counter()

    paths = write_scenario(ScenarioConfig(args.scenario, args.pool_size, args.target_size),
                           args.out / "data")
    pool, target = load_pool(paths.pool), load_pool(paths.target, role="target")
    test = load_pool(paths.test, role="test")
    cache = work_dir / "embeddings"
    pool_x, test_x = input_matrix(pool, cache), input_matrix(test, cache)
    n_classes = n_classes_of(pool, target, test)
    seeds = list(range(args.seeds))
    base = DistillConfig()
    full = evaluate_subset(pool_x, pool.labels, test_x, test.labels, n_classes,
                           EvalConfig(base.model, seeds=tuple(seeds)))
    print(f"{args.scenario}: pool {len(pool)}, target {len(target)}, test {len(test)}, "
          f"{pool_x.shape[1]}-d inputs, {n_classes} classes; student {base.model.kind}; "
          f"full-pool accuracy {full.mean:.3f} ± {full.std:.3f}", flush=True)

    records, storage, teacher = [], [], []
    for seed in seeds:
        t0 = time.perf_counter()
        rankings = {size: gtp_ranking(pool, target, size, seed, work_dir) for size in sizes}
        expert = train_expert(pool_x, pool.labels, n_classes, work_dir, pool.content_hash,
                              replace(base, seed=seed))
        teacher.append(accuracy(expert.load_model(expert.checkpoints[base.label_epoch]),
                                test_x, test.labels))
        print(f"seed {seed}: GTP per-class rankings in {time.perf_counter() - t0:.0f} s; "
              f"expert at epoch {base.label_epoch}: {teacher[-1]:.3f} test accuracy", flush=True)
        for size in sizes:
            for row, options in ROWS.items():
                t0 = time.perf_counter()
                config = replace(base, per_class=size, labels=options["labels"],
                                 method=options["method"], seed=seed)
                distilled = distill(pool_x, pool.labels, pool.ids, n_classes, config, work_dir,
                                    pool.content_hash,
                                    ranked=rankings[size] if options.get("gtp") else None)
                result = evaluate_distilled(distilled, test_x, test.labels, n_classes,
                                            EvalConfig(base.model, seeds=(seed,)))
                records.append({"method": row, "per_class": size, "seed": seed,
                                "test_accuracy": result.mean,
                                "seconds": round(time.perf_counter() - t0, 1),
                                **distilled.info.get("matching", {})})
                print(f"  {row:20s} N={size:3d}: {result.mean:.3f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
                if seed == seeds[0] and row in ("random real + soft", "TM + soft"):
                    name = f"{options['method']}-soft-{size}.parquet"
                    path = write_distilled(work_dir / "bench-distill-sets" / name, distilled)
                    storage.append({"set": row, "per_class": size, **storage_cost(path)})

    frame = pd.DataFrame(records)
    summary = frame.groupby(["method", "per_class"], sort=False)["test_accuracy"].agg(
        ["mean", "std"]).reset_index()
    summary["std"] = frame.groupby(["method", "per_class"], sort=False)["test_accuracy"].std(
        ddof=0).to_numpy()
    summary["cell"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(summary["mean"], summary["std"],
                                                           strict=True)]
    wide = summary.pivot(index="method", columns="per_class", values="cell").reindex(list(ROWS))
    wide.columns = [f"{c} / class" for c in wide.columns]
    table = wide.reset_index().to_markdown(index=False)
    best = summary.loc[summary["mean"].idxmax()]
    soft_wins = all(
        summary.query("method == 'random real + soft' and per_class == @n")["mean"].item()
        > summary.query("method == 'random real + hard' and per_class == @n")["mean"].item()
        for n in sizes)
    storage_frame = pd.DataFrame(storage)
    storage_frame["labels / inputs (disk)"] = storage_frame["label_to_input"].map("{:.1%}".format)
    storage_frame["labels / inputs (raw)"] = storage_frame["label_to_input_raw"].map(
        "{:.2%}".format)
    storage_md = storage_frame[["set", "per_class", "label_bytes", "input_bytes",
                                "labels / inputs (disk)", "label_bytes_raw", "input_bytes_raw",
                                "labels / inputs (raw)"]].to_markdown(index=False)
    text = "\n".join([
        f"Test accuracy, mean ± std over seeds {seeds} (N examples per class).", "", table, "",
        f"full pool ({len(pool)} examples, hard labels): {full.mean:.3f} ± {full.std:.3f}",
        f"expert (soft-label teacher) at epoch {base.label_epoch}: {np.mean(teacher):.3f} ± "
        f"{np.std(teacher):.3f}",
        f"soft labels beat hard labels at every size: {soft_wins}",
        f"best distilled set: {best['method']} at {best['per_class']} / class = "
        f"{best['mean']:.3f}, {best['mean'] / full.mean:.1%} of full-pool accuracy",
        "", "Storage of soft-label sets (seed 0): Parquet bytes on disk (MNIST pixels, 256 values,",
        "compress well; learned inputs do not) and raw bytes (float16 labels, float32 inputs):",
        "", storage_md,
        "", f"wall time {time.perf_counter() - started:.0f} s"])
    write_json(args.out / "results.json", {"records": records, "full": full.to_dict(),
                                           "storage": storage})
    write_atomic(args.out / "summary.md", lambda p: p.write_text(text + "\n"))
    print("\n" + text)


if __name__ == "__main__":
    main()
