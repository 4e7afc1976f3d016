"""``curation benchmark``: every method x budget x seed on real held-out data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curation.cli.common import (
    DEFAULT_DIM,
    DIM_HELP,
    LM_BASE_HELP,
    PROXY_HELP,
    ProxyName,
    console,
    parse_floats,
    parse_seed_count,
    user_errors,
    work_directory,
)
from curation.config import choice
from curation.demo_data import ScenarioConfig
from curation.errors import CurationError
from curation.instruct_data import TARGET_TASKS
from curation.lm_bases import LM_BASES, resolve_lm_base
from curation.proxies import proxy_kind

TargetTask = choice(TARGET_TASKS)


def benchmark(
    out: Annotated[Path, typer.Option(help="Directory for results.json, summary.md, plot.png.")],
    scenario: Annotated[str | None, typer.Option(
        help="Demo scenario instead of files: targeted-text, general-text, noisy-text, images, "
             "instruct.")]
    = None,
    target_task: Annotated[TargetTask, typer.Option(
        help="--scenario instruct: the target task (its few-shot examples and test split).")]
    = "mmlu",
    pool: Annotated[Path | None, typer.Option(help="Pool file (without --scenario).")] = None,
    test: Annotated[Path | None, typer.Option(help="Test split (without --scenario).")] = None,
    target: Annotated[Path | None, typer.Option(help="Target set (without --scenario).")]
    = None,
    methods: Annotated[str | None, typer.Option(
        help="Comma-separated selectors [default: random,less,el2n,gtp; random,less,gtp for "
             "causal-lm].")] = None,
    budgets: Annotated[str, typer.Option(help="Comma-separated budgets (fractions or counts).")]
    = "0.01,0.05,0.1",
    seeds: Annotated[str, typer.Option(help="A count N (seeds 0..N-1) or a list like 0,4,7.")]
    = "3",
    pool_size: Annotated[int | None, typer.Option(
        help="Pool size of a --scenario [default: 3000; 1500 for causal-lm].")] = None,
    test_size: Annotated[int | None, typer.Option(
        help="Cap on test rows of a --scenario, 0 for all [default: 0; 400 for causal-lm].")]
    = None,
    proxy: Annotated[ProxyName, typer.Option(help=PROXY_HELP)] = "linear",
    checkpoints: Annotated[int | None, typer.Option(
        help="Proxy checkpoints [default: 4; 3 for causal-lm].")] = None,
    dim: Annotated[int, typer.Option(help=DIM_HELP)] = DEFAULT_DIM,
    use_weights: Annotated[bool, typer.Option(help="Train on selector weights.")] = False,
    lm_base: Annotated[Path | None, typer.Option(help=LM_BASE_HELP)] = None,
    pretrain_docs: Annotated[int, typer.Option(
        help="causal-lm with a text --scenario and no --lm-base: pre-train the base LM on this "
             "many 20 Newsgroups training documents outside the pool and target (0: random "
             "base).")] = 4000,
    work_dir: Annotated[Path | None, typer.Option(help="Cache for embeddings, proxies, stores.")]
    = None,
    resume: Annotated[bool, typer.Option(
        help="Take the seeds that --out/results.partial.json already records (written after "
             "every seed of a run that was cut off) instead of running them again; refused "
             "if it was written by another grid or other data.")] = False,
) -> None:
    """Compare selectors: methods x budgets x seeds, each subset trained fresh and tested.

    With --proxy causal-lm each subset fine-tunes the whole warmed-up LM (selection still
    reads LoRA gradients) and is scored by held-out perplexity, lower is better.
    """
    from dataclasses import replace

    from curation.benchmark import BenchmarkConfig, run_benchmark, write_report
    from curation.demo_data import build_scenario, write_splits
    from curation.evaluate import EvalConfig
    from curation.io import check_output_dir
    from curation.pool import load_pool
    from curation.proxies import unsupported_methods
    from curation.selectors import SELECTORS
    from curation.workflow import GradientSettings

    kind = proxy_kind(proxy)
    defaults = kind.benchmark_scenario
    with user_errors():
        check_output_dir(out, "--out")
        work = work_directory(work_dir)
        default = ("random", "less", "el2n", "gtp")
        methods = methods or ",".join(m for m in default if m not in unsupported_methods(
            kind, default, SELECTORS))
        config = BenchmarkConfig(
            methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
            budgets=tuple(parse_floats(budgets, "--budgets")),
            seeds=tuple(parse_seed_count(seeds)),
            # The real settings need the pool (a causal-lm's pre-trained base); see below.
            settings=GradientSettings(kind.spec()),
            evaluation=EvalConfig(seeds=(0,), use_weights=use_weights))
        config.check_methods()  # before any file is written
        named = lm_base is not None and str(lm_base) in LM_BASES
        resolve_lm_base(lm_base)  # an unknown name fails before any file is written
        if scenario is not None:
            if pool or test or target:
                raise CurationError("give either --scenario or --pool/--test/--target, not both")
            sizes = {"pool_size": defaults["pool_size"] if pool_size is None else pool_size,
                     "test_size": defaults["test_size"] if test_size is None else test_size}
            tables = build_scenario(ScenarioConfig(scenario, target_task=target_task, **sizes))
            # Every option is checked against the data before the splits are written.
            config.validate(tables.pool.num_rows, has_target=True)
            paths = write_splits(tables, out / "data")
            pool, test, target = paths.pool, paths.test, paths.target
        elif pool is None or test is None:
            raise CurationError("--pool and --test are required without --scenario")
        elif pool_size is not None or test_size is not None:
            raise CurationError("--pool-size and --test-size size a --scenario; they do not "
                                "apply to --pool/--test files")
        labels = kind.needs_labels
        pool_data = load_pool(pool, role="pool", require_label=labels)
        target_data = (load_pool(target, role="target", require_label=labels, pool=pool_data)
                       if target else None)
        test_data = load_pool(test, role="test", require_label=labels, pool=pool_data)
        config.validate(len(pool_data), target_data is not None)
        # Fine-tuning only LoRA adapters of a small base moved held-out perplexity by <1%
        # for any subset (docs/architecture.md): the benchmark trains the whole model, except
        # on a named pre-trained base, where LoRA alone is the setting of LESS and GTP.
        config = replace(config, settings=kind.settings(
            work, pool_data, target_data, checkpoints=checkpoints, dim=dim, base=lm_base,
            pretrain_docs=pretrain_docs if scenario is not None and lm_base is None else 0,
            train_base=None if named else True, progress=True))
        checkpoint = out / "results.partial.json"
        records = run_benchmark(pool_data, test_data, target_data, config, work,
                                checkpoint=checkpoint, resume=resume)
        title = (f"{scenario} ({proxy})" if scenario and defaults.get("titled")
                 else scenario or "")
        report = write_report(records, out, title=title, metric=config.metric)
        checkpoint.unlink(missing_ok=True)  # results.json now holds every record
    console.print(report["table"])
    console.print(f"results -> {report['results']}, plot -> {report['plot']}")
