"""Result tables and plots: a metric (test accuracy, perplexity, ...) per method and budget,
mean ± std over seeds."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

# Reference rows drawn as horizontal lines: (line style, legend label).
_REFERENCES = {"full": ("--", "full pool"), "warmup": (":", "warm-up only, no fine-tuning"),
               "base": ("-.", "base model, no fine-tuning")}


def summarize(records: Sequence[dict], metric: str = "test_accuracy") -> pd.DataFrame:
    """Mean, std and count of ``metric`` per (method, budget)."""
    frame = pd.DataFrame(records)
    return (frame.groupby(["method", "budget"], sort=False)[metric]
            .agg(["mean", "std", "count"]).fillna({"std": 0.0}).reset_index())


def metric_table(records: Sequence[dict], metric: str = "test_accuracy") -> str:
    """Markdown table: one row per method, one column per budget, cells ``mean ± std``."""
    summary = summarize(records, metric)
    summary["cell"] = [f"{m:.3f} ± {s:.3f}" if c > 1 else f"{m:.3f}"
                       for m, s, c in zip(summary["mean"], summary["std"], summary["count"],
                                          strict=True)]
    methods = sorted(dict.fromkeys(summary["method"]), key=lambda m: m in _REFERENCES)
    wide = summary.pivot(index="method", columns="budget", values="cell").reindex(methods)
    wide.columns = [_budget_label(b) for b in wide.columns]
    return wide.fillna("").reset_index().to_markdown(index=False)


def metric_plot(records: Sequence[dict], metric: str = "test_accuracy"):
    """``metric`` vs budget per method with std error bars; reference rows (full pool, warm-up) as
horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(records, metric)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for method, rows in summary.groupby("method", sort=False):
        if method in _REFERENCES:
            ax.axhline(rows["mean"].iloc[0], color="k", linestyle=_REFERENCES[method][0],
                       label=_REFERENCES[method][1])
            continue
        ax.errorbar(rows["budget"], rows["mean"], yerr=rows["std"], marker="o", capsize=3,
                    label=method)
    ax.set(xscale="log", xlabel="budget (fraction of pool)", ylabel=metric.replace("_", " "))
    ax.legend()
    return fig


def _budget_label(budget: float) -> str:
    return f"{budget:g}" if budget >= 1 and budget != 1.0 else f"{budget:.0%}"
