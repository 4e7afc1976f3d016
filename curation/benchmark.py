"""Selection-quality benchmark: every method x budget x seed, trained fresh and scored on test.

For each seed the whole chain is re-run with that seed (proxy warm-up sample and init,
projection, random selector) and the gradient stores are computed once and shared by every
method and budget. Every subset is evaluated by the same trainer (``curation.evaluate``), and the
full pool is evaluated once per seed as the ``full`` reference. Results are written as
``results.json`` (one record per run), ``summary.md`` (mean ± std) and ``plot.png``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from curation.embed import input_matrix
from curation.errors import CurationError
from curation.evaluate import EvalConfig, evaluate_subset
from curation.io import write_atomic, write_json
from curation.lineage import config_hash
from curation.lm import LMEvalConfig, LMSpec, finetune_perplexity, loss_scores, token_loss
from curation.pool import Pool
from curation.report import accuracy_plot, accuracy_table
from curation.selectors import SELECTORS, make_selector, resolve_budget
from curation.workflow import GradientSettings, cached_lm_proxy, run_selection


@dataclass(frozen=True)
class BenchmarkConfig:
    """The grid: methods x budgets x seeds, plus the shared chain and evaluation settings.

    ``evaluation`` trains classifiers (test accuracy); with a causal-LM proxy
    (``settings.proxy`` an ``LMSpec``) every subset instead fine-tunes the warmed-up LM as
    ``lm_evaluation`` says and is scored by held-out perplexity (``use_weights`` still comes
    from ``evaluation``).
    """

    methods: tuple[str, ...] = ("random", "less", "el2n", "gtp")
    budgets: tuple[float, ...] = (0.01, 0.05, 0.1)
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: GradientSettings = field(default_factory=GradientSettings)
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(seeds=(0,)))
    selector_options: dict[str, dict] = field(default_factory=dict)
    lm_evaluation: LMEvalConfig = field(default_factory=LMEvalConfig)

    @property
    def language_model(self) -> bool:
        return isinstance(self.settings.proxy, LMSpec)

    @property
    def metric(self) -> str:
        """The record field compared across methods (lower is better for perplexity)."""
        return "test_perplexity" if self.language_model else "test_accuracy"

    def validate(self, pool_size: int, has_target: bool) -> None:
        self.check_methods()
        for budget in self.budgets:
            resolve_budget(budget, pool_size)
        needy = [m for m in self.methods if "target" in SELECTORS[m].needs]
        if needy and not has_target:
            raise CurationError(f"method(s) {needy} need a target set (--target)")

    def check_methods(self) -> None:
        """The checks that need no data: methods and seeds."""
        unknown = [m for m in self.methods if m not in SELECTORS]
        if unknown or not self.methods:
            raise CurationError(
                f"unknown method(s) {unknown}; valid methods are {sorted(SELECTORS)}")
        if not self.seeds:
            raise CurationError("at least one seed is needed")
        classifier_only = [m for m in self.methods if "proxy" in SELECTORS[m].needs]
        if self.language_model and classifier_only:
            raise CurationError(f"method(s) {classifier_only} need class predictions, which a "
                                "causal-lm proxy does not make; leave them out of --methods")


# Trains on a subset (pool rows, their weights) with a seed; returns the record's metrics.
Evaluator = Callable[[GradientSettings, np.ndarray, np.ndarray | None, int], dict]


def run_benchmark(pool: Pool, test: Pool, target: Pool | None, config: BenchmarkConfig,
                  work_dir: str | Path, progress: bool = True) -> list[dict]:
    """Run the grid and return one record per (method, budget, seed) plus ``full`` per seed
    (and, for a causal LM, ``warmup``: the warmed-up model without fine-tuning, budget 0)."""
    config.validate(len(pool), target is not None)
    work_dir = Path(work_dir)
    evaluate = (_lm_evaluator(pool, test, config, work_dir, progress) if config.language_model
                else _classifier_evaluator(pool, test, target, config, work_dir, progress))
    extra = _pool_flags(pool, target)
    grid = list(itertools.product(config.seeds, config.methods, config.budgets))
    records = []
    bar = tqdm(total=len(grid) + len(config.seeds), desc="benchmark", disable=not progress)
    for seed in config.seeds:
        settings = _seeded(config.settings, seed)
        full = evaluate(settings, np.arange(len(pool)), None, seed)
        records.append({"method": "full", "budget": 1.0, "seed": seed, "n_selected": len(pool),
                        **full})
        if config.language_model:  # the starting point every fine-tuning run departs from
            records.append({"method": "warmup", "budget": 0.0, "seed": seed, "n_selected": 0,
                            **evaluate(settings, np.arange(0), None, seed)})
        bar.update()
        for method, budget in ((m, b) for s, m, b in grid if s == seed):
            options = dict(config.selector_options.get(method, {}))
            if method == "random":
                options.setdefault("seed", seed)
            selector = make_selector(method, **options)
            selection, lineage = run_selection(pool, target, selector, budget, work_dir,
                                               settings)
            rows = selection.indices
            records.append({
                "method": method, "budget": budget, "seed": seed, "n_selected": len(rows),
                **evaluate(settings, rows, selection.weights, seed),
                "config_hash": lineage["config_hash"],
                **{k: v for k, v in selection.info.items() if k != "k"},
                **{name: int(flag[rows].sum()) for name, flag in extra.items()},
                **_redundancy(pool, rows),
            })
            bar.update()
    bar.close()
    return records


def _classifier_evaluator(pool: Pool, test: Pool, target: Pool | None, config: BenchmarkConfig,
                          work_dir: Path, progress: bool) -> Evaluator:
    """Fresh classifiers (``curation.evaluate``) on the subset's embeddings: test accuracy."""
    cache = work_dir / "embeddings"
    pool_x, test_x = input_matrix(pool, cache, progress), input_matrix(test, cache, progress)
    n_classes = int(max(pool.labels.max(), test.labels.max(),
                        target.labels.max() if target is not None else 0)) + 1

    def evaluate(settings: GradientSettings, rows: np.ndarray, weights: np.ndarray | None,
                 seed: int) -> dict:
        result = evaluate_subset(pool_x[rows], pool.labels[rows], test_x, test.labels,
                                 n_classes, config.evaluation, weights, seeds=[seed])
        return {"test_accuracy": result.mean}

    return evaluate


def _lm_evaluator(pool: Pool, test: Pool, config: BenchmarkConfig, work_dir: Path,
                  progress: bool) -> Evaluator:
    """The seed's warmed-up LM fine-tuned on the subset: held-out loss and perplexity."""
    # Per seed's settings: the proxy (opened and verified once) and its tokens of pool and test.
    prepared: dict[GradientSettings, tuple] = {}

    def evaluate(settings: GradientSettings, rows: np.ndarray, weights: np.ndarray | None,
                 seed: int) -> dict:
        if settings not in prepared:
            proxy = cached_lm_proxy(work_dir, pool, settings, progress)
            prepared[settings] = (proxy, *proxy.encode(pool), *proxy.encode(test))
        proxy, ids, targets, test_ids, test_targets = prepared[settings]
        if len(rows) == 0:  # the warmed-up model as it is, without fine-tuning
            loss = token_loss(proxy.load_model(proxy.checkpoints[-1]), test_ids, test_targets,
                              config.lm_evaluation.eval_batch_size)
            return loss_scores(loss)
        use = weights if config.evaluation.use_weights else None
        result = finetune_perplexity(proxy, ids[rows], targets[rows], test_ids, test_targets,
                                     config.lm_evaluation, seed, use)
        return loss_scores(result["test_loss"])

    return evaluate


def write_report(records: Sequence[dict], out_dir: str | Path, title: str = "",
                 metric: str = "test_accuracy") -> dict:
    """Write ``results.json``, ``summary.md`` and ``plot.png`` (of ``metric``) under ``out_dir``."""
    out_dir = Path(out_dir)
    table = accuracy_table(records, metric)
    seeds = sorted({r["seed"] for r in records})
    header = f"# {title}\n\n" if title else ""
    direction = " (lower is better)" if metric in ("test_perplexity", "test_loss") else ""
    summary = (f"{header}{metric.replace('_', ' ').capitalize()}{direction}, mean ± std over "
               f"seeds {seeds} (budget = fraction of the pool).\n\n{table}\n")
    paths = {"results": out_dir / "results.json", "summary": out_dir / "summary.md",
             "plot": out_dir / "plot.png"}
    write_json(paths["results"], list(records))
    write_atomic(paths["summary"], lambda p: p.write_text(summary))
    figure = accuracy_plot(records, metric)
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


def _pool_flags(pool: Pool, target: Pool | None = None) -> dict[str, np.ndarray]:
    """Per-row flags worth counting in a selection: rows in the target's domain(s) when pool
    and target have a ``domain`` column, and the noisy-text scenario's columns."""
    names = pool.table.column_names
    flags = {}
    if target is not None and "domain" in names and "domain" in target.table.column_names:
        domains = pa.array(sorted(set(target.table.column("domain").to_pylist()) - {None}))
        flags["n_target_domain"] = pc.is_in(pool.table.column("domain"), domains).to_numpy(
            zero_copy_only=False).astype(bool)
    if "duplicate_of" in names:
        flags["n_duplicates"] = pc.is_valid(pool.table.column("duplicate_of")).to_numpy()
    if "label_noise" in names:
        flags["n_noisy_labels"] = pool.table.column("label_noise").to_numpy(
            zero_copy_only=False).astype(bool)
    return flags
