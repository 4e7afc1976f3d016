"""Collect `make bench-instruct` results into benchmarks/INSTRUCT.md, with the goals checked.

Usage: python benchmarks/instruct_report.py [RESULTS_DIR] (default benchmarks/results).
Reads ``instruct-<task>/results.json`` (written by `curation benchmark --scenario instruct`),
writes mean ± std tables of ``test_loss`` (lower is better), ``test_accuracy`` (where the test
split has choices) and ``n_target_domain``, a plot of test loss per task, and for each goal
whether the measured means meet it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from curation.io import write_atomic
from curation.report import metric_plot, metric_table, summarize

TASKS = {
    "mmlu": "MMLU: target = 40 dev few-shot examples, test = 200 test questions with 4 choices",
    "gsm8k": "GSM8K: target = the 8 chain-of-thought exemplars, test = 200 test problems "
             "with worked solutions (no choices)",
    "bbh": "BIG-Bench Hard: target = 1 chain-of-thought exemplar per task, test = the other 2",
}
BUDGETS = (0.01, 0.05)
RIVALS = ("random", "less")


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def goals(records: list[dict]) -> list[str]:
    """GTP at 5% <= full-pool test loss; GTP beats LESS and random on loss (lower) and accuracy
    (higher) at every budget, by the means; GTP's picks mostly on-target."""
    lines = []
    loss = summarize(records, "test_loss").set_index(["method", "budget"])["mean"]
    full = float(loss[("full", 1.0)])
    gtp5 = float(loss[("gtp", 0.05)])
    lines.append(f"- GTP at 5% matches or beats the full pool on test loss: {gtp5:.4f} vs "
                 f"{full:.4f}: {_verdict(gtp5 <= full)}")
    metrics = [("test_loss", min)]
    if all("test_accuracy" in r for r in records):
        metrics.append(("test_accuracy", max))
    for metric, better in metrics:
        mean = summarize(records, metric).set_index(["method", "budget"])["mean"]
        for budget in BUDGETS:
            ours = float(mean[("gtp", budget)])
            rivals = {m: float(mean[(m, budget)]) for m in RIVALS}
            best = better(rivals.values())
            wins = ours == better(ours, best) and ours != best
            lines.append(f"- {metric} at {budget:.0%}: GTP {ours:.4f}, " + ", ".join(
                f"{m} {v:.4f}" for m, v in rivals.items()) + f": {_verdict(wins)}")
    domain = summarize([r for r in records if "n_target_domain" in r], "n_target_domain")
    for budget in BUDGETS:
        rows = domain[(domain["method"] == "gtp") & (domain["budget"] == budget)]
        picked = [r["n_selected"] for r in records
                  if r["method"] == "gtp" and r["budget"] == budget]
        share = float(rows["mean"].iloc[0]) / max(picked[0], 1)
        rand = domain[(domain["method"] == "random") & (domain["budget"] == budget)]
        lines.append(f"- GTP's picks on-target at {budget:.0%}: {share:.0%} of {picked[0]} "
                     f"(random: {float(rand['mean'].iloc[0]) / max(picked[0], 1):.0%}): "
                     f"{_verdict(share > 0.5)}")
    return lines


def main(results_dir: Path) -> None:
    sections = ["# Targeted instruction tuning of SmolLM2-135M (`make bench-instruct`)", "",
                "Pool: 1,000 real instructions (OpenAI evals tasks, decontaminated against the "
                "target's test split), SmolLM2-135M-Instruct with LoRA (rank 8, q/k/v/o of the "
                "top 2 of 30 layers); per seed the adapters warm up on 5% of the pool "
                "(3 checkpoints), the selectors read the projected LoRA gradient trajectories, "
                "and every subset fine-tunes fresh adapters on the base for 3 epochs. `base` is "
                "the model before any fine-tuning, `full` the whole pool. Mean ± std over "
                "seeds 0, 1, 2. Regenerate: `make bench-instruct` then "
                "`python benchmarks/instruct_report.py`.", ""]
    for task, description in TASKS.items():
        path = results_dir / f"instruct-{task}" / "results.json"
        if not path.exists():
            continue
        records = json.loads(path.read_text())
        sections += [f"## {task}", "", description, "", "Test loss (mean per-token loss of the "
                     "gold response; lower is better):", "", metric_table(records, "test_loss"),
                     ""]
        if all("test_accuracy" in r for r in records):
            sections += ["Test accuracy (highest length-normalized log-likelihood among the "
                         "choices):", "", metric_table(records, "test_accuracy"), ""]
        picks = [r for r in records if "n_target_domain" in r]
        sections += ["Selected rows in the target's domain (`n_target_domain`):", "",
                     metric_table(picks, "n_target_domain"), "", "Goals:", "", *goals(records),
                     ""]
        figure = metric_plot(records, "test_loss")
        figure.axes[0].set_title(f"instruct ({task}), SmolLM2-135M")
        plot = results_dir / f"instruct-{task}" / "test_loss.png"
        write_atomic(plot, lambda p, f=figure: f.savefig(p, format="png", dpi=110,
                                                          bbox_inches="tight"))
        sections += [f"![test loss, {task}](results/instruct-{task}/test_loss.png)", ""]
    text = "\n".join(sections)
    out = Path(__file__).resolve().parent / "INSTRUCT.md"
    write_atomic(out, lambda p: p.write_text(text))
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results"))
