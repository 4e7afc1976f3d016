"""Helpers shared by the assets: Markdown tables, inline PNG plots, config checks."""

import base64
import io

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
