"""Helpers shared by the assets: Markdown tables, inline PNG plots, config checks."""

import base64
import io
import warnings

import dagster as dg
import numpy as np
import pandas as pd


def table(frame: pd.DataFrame, floatfmt: str = ".4f") -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=floatfmt))


def histogram(values: np.ndarray, name: str = "label") -> dg.MetadataValue:
    labels, counts = np.unique(values, return_counts=True)
    return table(pd.DataFrame({name: labels, "count": counts}))


def plot(figure) -> dg.MetadataValue:
    """A matplotlib figure as an inline PNG in Markdown (shown in the Dagster UI)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{encoded})")


def plot_file(path) -> dg.MetadataValue:
    """A PNG file on disk as an inline image in Markdown."""
    with open(path, "rb") as f:
        encoded = base64.b64encode(f.read()).decode()
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{encoded})")


def figure(width: float = 6.0, height: float = 3.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def check_choices(values: list[str], allowed: tuple[str, ...]) -> list[str]:
    """Config validator: every value must be one of ``allowed`` and the list non-empty."""
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ValueError(f"expected a non-empty list of {list(allowed)}, got {values}")
    return values


def check_results(asset: str, outcomes: dict) -> list[dg.AssetCheckResult]:
    """``curation.checks.CheckOutcome``s by check name as the results shown in the UI."""
    return [dg.AssetCheckResult(asset_key=asset, check_name=name, passed=o.passed,
                                description=o.description, metadata=o.metadata)
            for name, o in outcomes.items()]


def check_specs(asset, descriptions: dict[str, str], blocking: bool = False,
                deps: tuple[str, ...] = (), partitions_def=None) -> list[dg.AssetCheckSpec]:
    """One spec per invariant of ``asset``; ``deps`` are other assets the checks read.

    A partitioned asset's checks take its ``partitions_def``, so each run checks (and loads)
    only its own partition. Dagster marks partitioned checks as a preview feature.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [dg.AssetCheckSpec(name, asset=asset, description=text, blocking=blocking,
                                  additional_deps=list(deps), partitions_def=partitions_def)
                for name, text in descriptions.items()]


def share_plot(mix: pd.DataFrame, column: str) -> dg.MetadataValue:
    """Bars of each value's share in the subset next to its share in the pool."""
    fig, ax = figure(width=max(4.0, 0.35 * len(mix) + 2), height=3.0)
    x = np.arange(len(mix))
    ax.bar(x - 0.2, mix["pool_share"], width=0.4, label="pool")
    ax.bar(x + 0.2, mix["subset_share"], width=0.4, label="subset")
    ax.set_xticks(x, [str(v) for v in mix[column]], rotation=90 if len(mix) > 12 else 0)
    ax.set(xlabel=column, ylabel="share")
    ax.legend()
    return plot(fig)
