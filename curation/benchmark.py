"""Selection-quality benchmark: every method x budget x seed, trained fresh and scored on test.

For each seed the whole chain is re-run with that seed (proxy warm-up sample and init,
projection, random selector) and the gradient stores are computed once and shared by every
method and budget. Every subset is evaluated by the same trainer (``curation.evaluate``), and the
full pool is evaluated once per seed as the ``full`` reference. Results are written as
``results.json`` (one record per run), ``summary.md`` (mean ± std) and ``plot.png``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from tqdm.auto import tqdm

from curation.embed import input_matrix
from curation.errors import CurationError
from curation.evaluate import EvalConfig, evaluate_subset
from curation.io import write_atomic, write_json
from curation.lineage import config_hash
from curation.pool import Pool
from curation.report import accuracy_plot, accuracy_table
from curation.selectors import SELECTORS, make_selector, resolve_budget
from curation.workflow import GradientSettings, run_selection


@dataclass(frozen=True)
class BenchmarkConfig:
    """The grid: methods x budgets x seeds, plus the shared chain and evaluation settings."""

    methods: tuple[str, ...] = ("random", "less", "el2n", "gtp")
    budgets: tuple[float, ...] = (0.01, 0.05, 0.1)
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: GradientSettings = field(default_factory=GradientSettings)
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(seeds=(0,)))
    selector_options: dict[str, dict] = field(default_factory=dict)

    def validate(self, pool_size: int, has_target: bool) -> None:
        unknown = [m for m in self.methods if m not in SELECTORS]
        if unknown or not self.methods:
            raise CurationError(
                f"unknown method(s) {unknown}; valid methods are {sorted(SELECTORS)}")
        if not self.seeds:
            raise CurationError("at least one seed is needed")
        for budget in self.budgets:
            resolve_budget(budget, pool_size)
        needy = [m for m in self.methods if "target" in SELECTORS[m].needs]
        if needy and not has_target:
            raise CurationError(f"method(s) {needy} need a target set (--target)")


def run_benchmark(pool: Pool, test: Pool, target: Pool | None, config: BenchmarkConfig,
                  work_dir: str | Path, progress: bool = True) -> list[dict]:
    """Run the grid and return one record per (method, budget, seed) plus ``full`` per seed."""
    config.validate(len(pool), target is not None)
    work_dir = Path(work_dir)
    cache = work_dir / "embeddings"
    pool_x, test_x = input_matrix(pool, cache, progress), input_matrix(test, cache, progress)
    n_classes = int(max(pool.labels.max(), test.labels.max(),
                        target.labels.max() if target is not None else 0)) + 1
    extra = _pool_flags(pool)
    grid = list(itertools.product(config.seeds, config.methods, config.budgets))
    records = []
    bar = tqdm(total=len(grid) + len(config.seeds), desc="benchmark", disable=not progress)
    for seed in config.seeds:
        settings = _seeded(config.settings, seed)
        full = evaluate_subset(pool_x, pool.labels, test_x, test.labels, n_classes,
                               config.evaluation, seeds=[seed])
        records.append({"method": "full", "budget": 1.0, "seed": seed, "n_selected": len(pool),
                        "test_accuracy": full.mean})
        bar.update()
        for method, budget in ((m, b) for s, m, b in grid if s == seed):
            options = dict(config.selector_options.get(method, {}))
            if method == "random":
                options.setdefault("seed", seed)
            selector = make_selector(method, **options)
            selection, lineage = run_selection(pool, target, selector, budget, work_dir,
                                               settings)
            rows = selection.indices
            result = evaluate_subset(pool_x[rows], pool.labels[rows], test_x, test.labels,
                                     n_classes, config.evaluation, selection.weights,
                                     seeds=[seed])
            records.append({
                "method": method, "budget": budget, "seed": seed, "n_selected": len(rows),
                "test_accuracy": result.mean, "config_hash": lineage["config_hash"],
                **{k: v for k, v in selection.info.items() if k != "k"},
                **{name: int(flag[rows].sum()) for name, flag in extra.items()},
                **_redundancy(pool, rows),
            })
            bar.update()
    bar.close()
    return records


def write_report(records: Sequence[dict], out_dir: str | Path, title: str = "") -> dict:
    """Write ``results.json``, ``summary.md`` and ``plot.png`` under ``out_dir``."""
    out_dir = Path(out_dir)
    table = accuracy_table(records)
    seeds = sorted({r["seed"] for r in records})
    header = f"# {title}\n\n" if title else ""
    summary = (f"{header}Test accuracy, mean ± std over seeds {seeds} "
               f"(budget = fraction of the pool).\n\n{table}\n")
    paths = {"results": out_dir / "results.json", "summary": out_dir / "summary.md",
             "plot": out_dir / "plot.png"}
    write_json(paths["results"], list(records))
    write_atomic(paths["summary"], lambda p: p.write_text(summary))
    figure = accuracy_plot(records)
    if title:
        figure.axes[0].set_title(title)
    write_atomic(paths["plot"], lambda p: figure.savefig(p, format="png", dpi=110,
                                                          bbox_inches="tight"))
    return {**paths, "table": table}


def benchmark_id(pool: Pool, target: Pool | None, test: Pool, config: BenchmarkConfig) -> str:
    """Content hash of the data and grid: the name of a benchmark's output directory."""
    return config_hash({"pool": pool.content_hash, "test": test.content_hash,
                        "target": target.content_hash if target else None,
                        "grid": [list(config.methods), list(config.budgets), list(config.seeds)]})


def _seeded(settings: GradientSettings, seed: int) -> GradientSettings:
    return GradientSettings(settings.proxy, replace(settings.warmup, seed=seed),
                            replace(settings.datastore, seed=seed))


def _redundancy(pool: Pool, rows: np.ndarray) -> dict[str, int]:
    """Picks beyond the first from the same near-duplicate group (source and its copies)."""
    if "duplicate_of" not in pool.table.column_names:
        return {}
    source = pool.table.column("duplicate_of").to_pylist()
    groups = {source[r] or pool.ids[r] for r in rows}
    return {"n_redundant": len(rows) - len(groups)}


def _pool_flags(pool: Pool) -> dict[str, np.ndarray]:
    """Per-row flags worth counting in a selection (noisy-text scenario columns)."""
    names = pool.table.column_names
    flags = {}
    if "duplicate_of" in names:
        flags["n_duplicates"] = pc.is_valid(pool.table.column("duplicate_of")).to_numpy()
    if "label_noise" in names:
        flags["n_noisy_labels"] = pool.table.column("label_noise").to_numpy(
            zero_copy_only=False).astype(bool)
    return flags
