"""GTP option variants on one quality-benchmark scenario and seed, and a class-mix diagnostic.

    python benchmarks/bench_gtp_variants.py variants SCENARIO '{"name": ["gtp", {options}]}' [SEED] [CHAIN]
    python benchmarks/bench_gtp_variants.py mix SCENARIO [SEED]

Both use the chain, cache ($CURATION_HOME/work) and trainer of one seed of ``curation benchmark
--scenario SCENARIO`` (linear proxy, 4 checkpoints, 1,024-d; general-text with 2,000 test
rows), so a variant's numbers are what the benchmark would print for it. ``CHAIN`` (JSON)
overrides the chain's settings for every entry, e.g. ``'{"warmup": {"epochs": 8},
"datastore": {"dim": 256}}'`` (fields of ``WarmupConfig`` and ``DatastoreSpec``). ``variants`` prints
target test accuracy at 1 / 5 / 10% per named (method, options) entry, with redundant
near-duplicate picks ``(rN)`` where the pool has them and the distinct classes ``[cN]``; a name
ending in ``+w`` trains on the selection weights. ``mix`` (labelled pools) asks whether GTP's
loss to random is its class mix or its examples: GTP's picks against random subsets drawn
with GTP's class counts, the target's label mix, and the pool's.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.benchmark import _redundancy, _seeded  # noqa: E402
from curation.cli.common import work_directory  # noqa: E402
from curation.demo_data import ScenarioConfig, build_scenario, write_splits  # noqa: E402
from curation.evaluate import EvalConfig, evaluate_subsets  # noqa: E402
from curation.pool import load_pool  # noqa: E402
from curation.proxies import EvalData, proxy_kind  # noqa: E402
from curation.selectors import make_selector, resolve_budget  # noqa: E402
from curation.selectors.gtp_targets import split_budget  # noqa: E402
from curation.workflow import run_selection  # noqa: E402

BUDGETS = (0.01, 0.05, 0.1)


def chain(scenario: str, seed: int, overrides: dict | None = None):
    """(pool, target, test, settings, work dir, scorer factory) as the benchmark builds them."""
    work = work_directory(None)
    tables = build_scenario(ScenarioConfig(scenario, pool_size=3000,
                                           test_size=2000 if scenario == "general-text" else 0))
    paths = write_splits(tables, work.parent / "variant-data" / scenario)
    pool = load_pool(paths.pool, role="pool", require_label=True)
    target = load_pool(paths.target, role="target", require_label=True, pool=pool)
    test = load_pool(paths.test, role="test", require_label=True, pool=pool)
    kind = proxy_kind("linear")
    settings = _seeded(kind.settings(work, pool, target), seed)
    overrides = overrides or {}
    unknown = set(overrides) - {"warmup", "datastore"}
    if unknown:
        raise SystemExit(f"CHAIN: unknown section(s) {sorted(unknown)}; expected warmup, datastore")
    settings = replace(settings, warmup=replace(settings.warmup, **overrides.get("warmup", {})),
                       datastore=replace(settings.datastore, **overrides.get("datastore", {})))

    def scorer(weights: bool):
        return kind.scorer(EvalData(pool, test, target, work), settings=settings,
                           evaluation=EvalConfig(seeds=(0,), use_weights=weights))
    return pool, target, test, settings, work, scorer


def variants(scenario: str, entries: dict, seed: int, overrides: dict | None = None) -> None:
    pool, target, _, settings, work, scorer = chain(scenario, seed, overrides)
    runs = []
    for name, (method, options) in entries.items():
        for budget in BUDGETS:
            options = dict(options)
            if method == "random":
                options.setdefault("seed", seed)
            selection, _ = run_selection(pool, target, make_selector(method, **options), budget,
                                         work, settings)
            runs.append((name, selection))
    full, *scores = evaluate_subsets(scorer(False), [(s.indices, None) for _, s in runs], [seed],
                                     pool_size=len(pool))
    weighted = [i for i, (name, _) in enumerate(runs) if name.endswith("+w")]
    for i, score in zip(weighted, evaluate_subsets(
            scorer(True), [(runs[i][1].indices, runs[i][1].weights) for i in weighted], [seed]),
            strict=True):
        scores[i] = score
    print(f"# {scenario} seed {seed} chain {json.dumps(overrides or {})}; "
          f"full pool {full.metrics['test_accuracy']:.3f}")
    labels, cells = pool.labels, {}
    for (name, selection), score in zip(runs, scores, strict=True):
        redundant = _redundancy(pool, selection.indices)
        cells.setdefault(name, []).append(
            f"{score.metrics['test_accuracy']:.3f}"
            + (f"(r{redundant['n_redundant']})" if redundant else "")
            + f"[c{len(np.unique(labels[selection.indices]))}]")
    for name, row in cells.items():
        print(f"{name:24s} " + " / ".join(row))


def mix(scenario: str, seed: int) -> None:
    pool, target, _, settings, work, scorer = chain(scenario, seed)
    labels, n_classes = pool.labels, int(pool.labels.max()) + 1
    rng = np.random.default_rng(seed)

    def drawn(counts):
        return np.concatenate([rng.choice(np.flatnonzero(labels == c), int(n), replace=False)
                               for c, n in enumerate(counts) if n])
    subsets, names = [], []
    for budget in BUDGETS:
        k = resolve_budget(budget, len(pool))
        selection, _ = run_selection(pool, target, make_selector("gtp"), budget, work, settings)
        counts = {"random@gtp-mix": np.bincount(labels[selection.indices], minlength=n_classes),
                  "random@target-mix": split_budget(k, np.bincount(target.labels,
                                                                   minlength=n_classes) / len(target)),
                  "random@pool-mix": split_budget(k, np.bincount(labels, minlength=n_classes)
                                                  / len(pool))}
        subsets.append((selection.indices, None))
        names.append(("gtp", budget))
        for name, count in counts.items():
            subsets.append((drawn(count), None))
            names.append((name, budget))
    for (name, budget), score in zip(names, evaluate_subsets(scorer(False), subsets, [seed]),
                                     strict=True):
        print(f"{name:20s} {budget:.0%} {score.metrics['test_accuracy']:.3f}")


if __name__ == "__main__":
    command, scenario = sys.argv[1], sys.argv[2]
    if command == "variants":
        variants(scenario, json.loads(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0,
                 json.loads(sys.argv[5]) if len(sys.argv) > 5 else None)
    elif command == "mix":
        mix(scenario, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    else:
        raise SystemExit(f"unknown command {command!r}; expected variants or mix")
