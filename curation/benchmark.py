"""Selection-quality benchmark: every method x budget x seed, trained fresh and scored on test.

For each seed the whole chain is re-run with that seed (proxy warm-up sample and init,
projection, random selector) and the gradient stores are computed once and shared by every
method and budget. Every subset is evaluated by the same trainer (``curation.evaluate``), and the
full pool is evaluated once per seed as the ``full`` reference. Results are written as
``results.json`` (one record per run), ``summary.md`` (mean ± std) and ``plot.png``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
from tqdm.auto import tqdm

from curation.config import config
from curation.errors import CurationError
from curation.evaluate import EvalConfig, evaluate_subsets
from curation.io import write_atomic, write_json
from curation.lineage import config_hash
from curation.pool import Pool
from curation.proxies import EvalData, ProxyKind, kind_of, unsupported_methods
from curation.proxies.causal_lm import LMEvalConfig
from curation.report import metric_plot, metric_table
from curation.selectors import SELECTORS, make_selector, resolve_budget, takes_seed
from curation.workflow import GradientSettings, run_selection


@config("benchmark")
class BenchmarkConfig:
    """The grid: methods x budgets x seeds, plus the shared chain and evaluation settings.

    The proxy's kind (``settings.proxy``) says how a subset is scored: classifiers train fresh
    models as ``evaluation`` says (test accuracy); a causal-LM proxy fine-tunes the warmed-up
    LM as ``lm_evaluation`` says and is scored by held-out perplexity (``use_weights`` still
    comes from ``evaluation``).
    """

    # methods, budgets and seeds are checked against the data by ``validate`` (before any work).
    methods: tuple[str, ...] = Field(default=("random", "less", "el2n", "gtp"),
                                     description="Selectors to compare.")
    budgets: tuple[int | float, ...] = Field(default=(0.01, 0.05, 0.1), description=(
        "Budgets to compare: fractions of the pool (<1) or counts."))
    seeds: tuple[int, ...] = Field(default=(0, 1, 2), description="Whole-chain seeds.")
    settings: GradientSettings = Field(default_factory=GradientSettings, description=(
        "The chain: proxy, warm-up, datastore (seeds replaced per run)."))
    evaluation: EvalConfig = Field(default_factory=lambda: EvalConfig(seeds=(0,)), description=(
        "Classifier evaluation (and use_weights for every kind)."))
    selector_options: dict[str, dict] = Field(default_factory=dict,
                                              description="Options per selector name.")
    lm_evaluation: LMEvalConfig = Field(default_factory=LMEvalConfig,
                                        description="Fine-tuning of a causal-LM proxy per subset.")

    @property
    def kind(self) -> ProxyKind:
        return kind_of(self.settings.proxy)

    @property
    def metric(self) -> str:
        """The record field compared across methods (the kind's; lower is better for perplexity)."""
        return self.kind.metric

    def validate(self, pool_size: int, has_target: bool) -> None:
        self.check_methods()
        for budget in self.budgets:
            resolve_budget(budget, pool_size)
        needy = [m for m in self.methods if "target" in SELECTORS[m].needs]
        if needy and not has_target:
            raise CurationError(f"method(s) {needy} need a target set (--target)")

    def check_methods(self) -> None:
        """The checks that need no data: methods, seeds and that there are budgets."""
        unknown = [m for m in self.methods if m not in SELECTORS]
        if unknown or not self.methods:
            raise CurationError(
                f"unknown method(s) {unknown}; valid methods are {sorted(SELECTORS)}")
        if not self.seeds:
            raise CurationError("at least one seed is needed")
        if not self.budgets:
            raise CurationError("at least one budget is needed")
        unsupported = unsupported_methods(self.kind, self.methods)
        if unsupported:
            raise CurationError(f"method(s) {unsupported} need class predictions, which a "
                                f"{self.kind.name} proxy does not make; leave them out of --methods")


def run_benchmark(pool: Pool, test: Pool, target: Pool | None, config: BenchmarkConfig,
                  work_dir: str | Path, progress: bool = True,
                  checkpoint: str | Path | None = None, resume: bool = False) -> list[dict]:
    """Run the grid and return one record per (method, budget, seed) plus ``full`` per seed
    (and, where the kind defines one, ``warmup``: the warmed-up proxy without training on any
    subset, budget 0). Every subset is scored by ``curation.evaluate.evaluate_subsets``.

    ``checkpoint``: the records so far are written there (atomically) after every seed, so a
    run cut off loses at most its current seed; with ``resume`` the seeds already recorded
    there by the same grid (seeds aside) on the same data are taken from it, not run again.
    """
    config.validate(len(pool), target is not None)
    work_dir = Path(work_dir)
    data = EvalData(pool, test, target, work_dir, progress=progress)
    extra = _pool_flags(pool, target)
    grid = list(itertools.product(config.seeds, config.methods, config.budgets))
    key = grid_key(config, pool, test, target)
    records = resumed_records(checkpoint, key, config.seeds) if resume and checkpoint else []
    done = {r["seed"] for r in records}
    bar = tqdm(total=len(grid) + len(config.seeds), desc="benchmark", disable=not progress)
    bar.update(sum(1 for s, *_ in grid if s in done) + len(done))
    for seed in config.seeds:
        if seed in done:
            continue
        settings = _seeded(config.settings, seed)
        scorer = config.kind.scorer(data, settings=settings, evaluation=config.evaluation,
                                    lm_evaluation=config.lm_evaluation)
        runs = []
        for method, budget in ((m, b) for s, m, b in grid if s == seed):
            options = dict(config.selector_options.get(method, {}))
            if takes_seed(method):
                options.setdefault("seed", seed)
            selector = make_selector(method, **options)
            # progress: a seed's gradient stores (minutes on an LM) show their bars
            runs.append((method, budget, *run_selection(pool, target, selector, budget, work_dir,
                                                        settings, progress=progress)))
        full, *scores = evaluate_subsets(scorer, [(s.indices, s.weights) for *_, s, _ in runs],
                                         [seed], pool_size=len(pool))
        records.append({"method": "full", "budget": 1.0, "seed": seed, "n_selected": len(pool),
                        **full.metrics})
        start = scorer.untrained()  # the starting point every fine-tuning run departs from
        if start is not None:
            records.append({"method": "warmup", "budget": 0.0, "seed": seed, "n_selected": 0,
                            **start})
        base = scorer.reference()  # the pre-trained base itself, before any training here
        if base is not None:
            records.append({"method": "base", "budget": 0.0, "seed": seed, "n_selected": 0,
                            **base})
        bar.update()
        for (method, budget, selection, lineage), score in zip(runs, scores, strict=True):
            rows = selection.indices
            records.append({
                "method": method, "budget": budget, "seed": seed, "n_selected": len(rows),
                **score.metrics,
                "config_hash": lineage["config_hash"],
                **{k: v for k, v in selection.info.items() if k != "k"},
                **{name: int(flag[rows].sum()) for name, flag in extra.items()},
                **_redundancy(pool, rows),
            })
            bar.update()
        if checkpoint is not None:
            write_json(checkpoint, {"grid": key, "records": records})
    bar.close()
    return records


def grid_key(config: BenchmarkConfig, pool: Pool, test: Pool, target: Pool | None) -> str:
    """What a seed's records depend on besides its seed: the config without its seed list and
    the three splits' contents."""
    from pydantic import TypeAdapter

    values = TypeAdapter(type(config)).dump_python(config, mode="json")
    values.pop("seeds")
    return config_hash({"config": values, "pool": pool.content_hash,
                        "test": test.content_hash,
                        "target": None if target is None else target.content_hash})


def resumed_records(checkpoint: str | Path, key: str, seeds: Sequence[int]) -> list[dict]:
    """The records of ``seeds`` that ``checkpoint`` holds (none if it does not exist); a
    ``CurationError`` when it was written by another grid or other data."""
    path = Path(checkpoint)
    if not path.exists():
        return []
    try:
        saved = json.loads(path.read_text())
        grid, records = saved["grid"], saved["records"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CurationError(f"{path}: not a benchmark checkpoint ({exc}); delete it or run "
                            "without --resume") from None
    if grid != key:
        raise CurationError(f"{path} records another grid or other data (key {grid}, this run "
                            f"{key}); run without --resume to start over")
    return [r for r in records if r.get("seed") in set(seeds)]


def write_report(records: Sequence[dict], out_dir: str | Path, title: str = "",
                 metric: str = "test_accuracy") -> dict:
    """Write ``results.json``, ``summary.md`` and ``plot.png`` (of ``metric``) under ``out_dir``."""
    out_dir = Path(out_dir)
    table = metric_table(records, metric)
    seeds = sorted({r["seed"] for r in records})
    header = f"# {title}\n\n" if title else ""
    direction = " (lower is better)" if metric in ("test_perplexity", "test_loss") else ""
    summary = (f"{header}{metric.replace('_', ' ').capitalize()}{direction}, mean ± std over "
               f"seeds {seeds} (budget = fraction of the pool).\n\n{table}\n")
    paths = {"results": out_dir / "results.json", "summary": out_dir / "summary.md",
             "plot": out_dir / "plot.png"}
    write_json(paths["results"], list(records))
    write_atomic(paths["summary"], lambda p: p.write_text(summary))
    figure = metric_plot(records, metric)
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
