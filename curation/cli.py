"""The ``curation`` command line. Bad input exits with status 2 and one line naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow.parquet as pq
import typer
from rich.table import Table

from curation.cli_common import console, default_home, user_errors
from curation.cli_ops import register_catalog_commands, release_app
from curation.cli_options import config_options
from curation.config import choice
from curation.datastore_cli import datastore_app
from curation.demo_data import ScenarioConfig
from curation.errors import CurationError
from curation.proxies import PROXY_KINDS, proxy_help, proxy_kind

app = typer.Typer(help="Gradient-based data curation: demo data, selection, evaluation, "
                       "catalog queries and versioned releases.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
PROXY_HELP = proxy_help()
ProxyName = choice(PROXY_KINDS)
LM_BASE_HELP = ("causal-lm: a local model directory (save_pretrained, safetensors, with "
                "tokenizer.json) to start from instead of a random-init base; never downloaded.")
catalog_app = typer.Typer(help="Query the DuckDB metadata catalog.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(datastore_app, name="datastore")
register_catalog_commands(catalog_app)
app.add_typer(release_app, name="release")


@app.command("demo-data")
@config_options(ScenarioConfig, "config")
def demo_data(
    out: Annotated[Path, typer.Option(help="Directory for pool/target/test Parquet files.")],
    config: ScenarioConfig,  # built from the options by config_options
) -> None:
    """Write a real demo scenario as pool / target / test Parquet files."""
    from curation.demo_data import write_scenario

    with user_errors():
        paths = write_scenario(config, out)
    for name in ("pool", "target", "test"):
        path = getattr(paths, name)
        console.print(f"{name:6s} {pq.read_metadata(path).num_rows:6d} rows  {path}")


@app.command()
def select(
    pool: Annotated[Path, typer.Option(help="Pool: Parquet, datasets directory, json/csv.")],
    method: Annotated[str, typer.Option(help="Selector: random, less, el2n, gtp.")],
    budget: Annotated[float, typer.Option(help="Fraction of the pool (<1) or a count.")],
    out: Annotated[Path, typer.Option(help="Selection Parquet to write (lineage JSON beside).")],
    target: Annotated[Path | None, typer.Option(help="Target set (needed by less, gtp).")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed for the proxy, projection and selector.")] = 0,
    proxy: Annotated[ProxyName, typer.Option(help=PROXY_HELP)] = "linear",
    checkpoints: Annotated[int, typer.Option(help="Proxy checkpoints (trajectory length).")]
    = 4,
    dim: Annotated[int, typer.Option(help="Projection dimension per checkpoint.")] = 1024,
    lm_base: Annotated[Path | None, typer.Option(help=LM_BASE_HELP)] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Cache for embeddings, proxies, stores.")]
    = None,
) -> None:
    """Select a subset of POOL and write it as a Selection with its lineage."""
    from curation.io import write_json, write_parquet
    from curation.pool import load_pool
    from curation.selectors import SELECTORS, make_selector, resolve_budget
    from curation.workflow import run_selection

    kind = proxy_kind(proxy)
    work = work_dir or default_home() / "work"
    with user_errors():
        if out.suffix != ".parquet":
            raise CurationError(f"--out must be a .parquet path, got {out}")
        params = {"seed": seed} if method == "random" else {}
        selector = make_selector(method, **params)
        if lm_base is not None and not kind.takes_base:
            raise CurationError(f"--lm-base needs --proxy {_base_kinds()}")
        pool_data = load_pool(pool, role="pool", require_label=kind.needs_labels)
        resolve_budget(budget, len(pool_data))
        target_data = None
        if target is not None:
            target_data = load_pool(target, role="target", require_label=kind.needs_labels)
        elif "target" in SELECTORS[method].needs:
            raise CurationError(f"selector {method!r} needs --target")
        settings = kind.settings(work, pool_data, target_data, checkpoints=checkpoints, dim=dim,
                                 seed=seed, base=lm_base)
        selection, lineage = run_selection(pool_data, target_data, selector, budget, work,
                                           settings, progress=True)
        lineage_path = out.with_suffix(".lineage.json")
        write_json(lineage_path, lineage)
        write_parquet(out, selection.to_table())
    console.print(f"selected {len(selection)} of {len(pool_data)} examples -> {out}")
    console.print(f"lineage (config {lineage['config_hash']}) -> {lineage_path}")


@app.command()
def evaluate(
    pool: Annotated[Path, typer.Option(help="The pool the selection was drawn from.")],
    selection: Annotated[Path, typer.Option(help="Selection Parquet (column 'id').")],
    test: Annotated[Path, typer.Option(help="Held-out test split.")],
    seeds: Annotated[str, typer.Option(help="Comma-separated training seeds.")] = "0,1,2",
    use_weights: Annotated[bool, typer.Option(help="Use selection weights as loss weights.")]
    = False,
    out: Annotated[Path | None, typer.Option(help="Write the result as JSON here.")] = None,
    proxy: Annotated[ProxyName, typer.Option(
        help="The proxy kind whose evaluation to run. linear/mlp: fresh classifiers, test "
             "accuracy. causal-lm: fine-tune the causal-lm proxy that `select --proxy causal-lm` "
             "warmed up on this pool (give the same --proxy-seed, --checkpoints, --lm-base), "
             "report held-out perplexity.")]
    = "linear",
    proxy_seed: Annotated[int, typer.Option(help="causal-lm: the --seed given to select.")] = 0,
    checkpoints: Annotated[int, typer.Option(help="causal-lm: the --checkpoints given to select.")]
    = 4,
    lm_base: Annotated[Path | None, typer.Option(help="causal-lm: the --lm-base given to select.")]
    = None,
    work_dir: Annotated[Path | None, typer.Option(help="Cache for embeddings and proxies.")]
    = None,
) -> None:
    """Train on a selection and report the test score (mean and std over seeds): accuracy of
    fresh classifiers, or with --proxy causal-lm the perplexity of the fine-tuned LM."""
    from curation.evaluate import EvalConfig, evaluate_subsets
    from curation.io import write_json
    from curation.pool import load_pool
    from curation.proxies import EvalData
    from curation.selection import read_selection

    kind = proxy_kind(proxy)
    work = work_dir or default_home() / "work"
    with user_errors():
        seed_list = _parse_seeds(seeds)
        if not seed_list:
            raise CurationError("--seeds must name at least one seed")
        pool_data = load_pool(pool, role="pool", require_label=kind.needs_labels)
        test_data = load_pool(test, role="test", require_label=kind.needs_labels)
        indices, weights = read_selection(selection, pool_data.ids)
        settings = kind.settings(work, pool_data, None, checkpoints=checkpoints, seed=proxy_seed,
                                 base=lm_base)
        scorer = kind.scorer(EvalData(pool_data, test_data, None, work, progress=True),
                             settings=settings, evaluation=EvalConfig(seeds=tuple(seed_list),
                                                                      use_weights=use_weights))
        (score,) = evaluate_subsets(scorer, [(indices, weights)], seed_list)
        record = {**score.summary, "seeds": seed_list, "selection": str(selection)}
        if out is not None:
            write_json(out, record)
    console.print(f"test {kind.metric_label} {score.metrics[kind.metric]:.4f} ± "
                  f"{np.std(score.per_seed):.4f} over seeds {seed_list} ({score.n_train} "
                  "training examples)")


@app.command()
def benchmark(
    out: Annotated[Path, typer.Option(help="Directory for results.json, summary.md, plot.png.")],
    scenario: Annotated[str | None, typer.Option(
        help="Demo scenario instead of files: targeted-text, general-text, noisy-text, images.")]
    = None,
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
    dim: Annotated[int, typer.Option(help="Projection dimension per checkpoint.")] = 1024,
    use_weights: Annotated[bool, typer.Option(help="Train on selector weights.")] = False,
    lm_base: Annotated[Path | None, typer.Option(help=LM_BASE_HELP)] = None,
    pretrain_docs: Annotated[int, typer.Option(
        help="causal-lm with a text --scenario and no --lm-base: pre-train the base LM on this "
             "many 20 Newsgroups training documents outside the pool and target (0: random "
             "base).")] = 4000,
    work_dir: Annotated[Path | None, typer.Option(help="Cache for embeddings, proxies, stores.")]
    = None,
) -> None:
    """Compare selectors: methods x budgets x seeds, each subset trained fresh and tested.

    With --proxy causal-lm each subset fine-tunes the whole warmed-up LM (selection still
    reads LoRA gradients) and is scored by held-out perplexity, lower is better.
    """
    from dataclasses import replace

    from curation.benchmark import BenchmarkConfig, run_benchmark, write_report
    from curation.demo_data import ScenarioConfig, write_scenario
    from curation.evaluate import EvalConfig
    from curation.pool import load_pool
    from curation.proxies import unsupported_methods
    from curation.selectors import SELECTORS
    from curation.workflow import GradientSettings

    kind = proxy_kind(proxy)
    defaults = kind.benchmark_scenario
    work = work_dir or default_home() / "work"
    with user_errors():
        default = ("random", "less", "el2n", "gtp")
        methods = methods or ",".join(m for m in default if m not in unsupported_methods(
            kind, default, SELECTORS))
        config = BenchmarkConfig(
            methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
            budgets=tuple(_parse_floats(budgets, "--budgets")),
            seeds=tuple(_parse_seed_count(seeds)),
            # The real settings need the pool (a causal-lm's pre-trained base); see below.
            settings=GradientSettings(kind.spec()),
            evaluation=EvalConfig(seeds=(0,), use_weights=use_weights))
        config.check_methods()  # before any file is written
        if scenario is not None:
            if pool or test or target:
                raise CurationError("give either --scenario or --pool/--test/--target, not both")
            sizes = {"pool_size": pool_size or defaults["pool_size"],
                     "test_size": defaults["test_size"] if test_size is None else test_size}
            paths = write_scenario(ScenarioConfig(scenario, **sizes), out / "data")
            pool, test, target = paths.pool, paths.test, paths.target
        elif pool is None or test is None:
            raise CurationError("--pool and --test are required without --scenario")
        labels = kind.needs_labels
        pool_data = load_pool(pool, role="pool", require_label=labels)
        target_data = load_pool(target, role="target", require_label=labels) if target else None
        # Fine-tuning only LoRA adapters of a small base moved held-out perplexity by <1%
        # for any subset (docs/architecture.md): the benchmark trains the whole model.
        config = replace(config, settings=kind.settings(
            work, pool_data, target_data, checkpoints=checkpoints, dim=dim, base=lm_base,
            pretrain_docs=pretrain_docs if scenario is not None and lm_base is None else 0,
            train_base=True, progress=True))
        config.validate(len(pool_data), target_data is not None)
        records = run_benchmark(pool_data, load_pool(test, role="test", require_label=labels),
                                target_data, config, work)
        title = (f"{scenario} ({proxy})" if scenario and defaults.get("titled")
                 else scenario or "")
        report = write_report(records, out, title=title, metric=config.metric)
    console.print(report["table"])
    console.print(f"results -> {report['results']}, plot -> {report['plot']}")


@app.command()
def distill(
    pool: Annotated[Path, typer.Option(help="Pool to distill (its experts train on all of it).")],
    test: Annotated[Path, typer.Option(help="Held-out test split for the students.")],
    out: Annotated[Path, typer.Option(help="Directory for distilled.parquet, evaluation.json.")],
    per_class: Annotated[int, typer.Option(help="Distilled examples per class.")] = 10,
    labels: Annotated[str, typer.Option(help="soft (expert soft labels) or hard (one-hot).")]
    = "soft",
    method: Annotated[str, typer.Option(help="real (chosen examples) or tm (trajectory "
                                             "matching, synthetic inputs).")] = "real",
    selection: Annotated[Path | None, typer.Option(
        help="Selection Parquet: take its top-ranked members per class (default: random).")]
    = None,
    temperature: Annotated[float, typer.Option(help="Soft-label temperature.")] = 4.0,
    expert_epoch: Annotated[int | None, typer.Option(
        help="Expert epoch of the soft labels (default: the last).")] = None,
    expert_epochs: Annotated[int, typer.Option(help="Epochs of the expert trajectory.")] = 10,
    expert_lr: Annotated[float, typer.Option(help="Adam learning rate of the experts.")] = 1e-3,
    top_k: Annotated[int | None, typer.Option(help="Keep the k largest soft-label entries.")]
    = None,
    expert_data: Annotated[str, typer.Option(help="Experts train on the pool or the selection.")]
    = "pool",
    model: Annotated[str, typer.Option(help="Expert and student model: linear or mlp.")]
    = "linear",
    iterations: Annotated[int, typer.Option(help="Trajectory-matching iterations.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the choice, the experts and matching.")]
    = 0,
    seeds: Annotated[str, typer.Option(help="Comma-separated student training seeds.")]
    = "0,1,2",
    work_dir: Annotated[Path | None, typer.Option(help="Cache for embeddings and experts.")]
    = None,
) -> None:
    """Distill POOL to PER_CLASS examples per class, train fresh students on it, score on TEST."""
    from curation.distill import DistillConfig, ExpertConfig, MatchingConfig, run_distill
    from curation.pool import load_pool
    from curation.proxies.classifier import ProxySpec

    with user_errors():
        config = DistillConfig(
            per_class=per_class, labels=labels, method=method, temperature=temperature,
            expert_epoch=expert_epoch, top_k=top_k, expert_data=expert_data,
            model=ProxySpec(model),
            expert=ExpertConfig(epochs=expert_epochs, lr=expert_lr),
            matching=MatchingConfig(iterations=iterations), seed=seed)
        seed_list = _parse_seeds(seeds)
        if not seed_list:
            raise CurationError("--seeds must name at least one seed")
        outputs = run_distill(load_pool(pool, role="pool"), load_pool(test, role="test"), config,
                              out, work_dir or default_home() / "work", selection=selection,
                              eval_seeds=seed_list, progress=True)
    storage = outputs.storage
    console.print(f"distilled {outputs.size} examples -> {outputs.distilled}")
    console.print(f"soft labels {storage['label_bytes']} B vs inputs {storage['input_bytes']} B "
                  f"on disk ({storage['label_to_input']:.1%}); raw {storage['label_bytes_raw']} B "
                  f"vs {storage['input_bytes_raw']} B ({storage['label_to_input_raw']:.2%})")
    console.print(f"test accuracy {outputs.result.mean:.4f} ± {outputs.result.std:.4f} over seeds "
                  f"{seed_list} -> {outputs.evaluation}")


@catalog_app.command("query")
def catalog_query(
    sql: Annotated[str, typer.Argument(help="Read-only SQL over the catalog tables.")],
    db: Annotated[Path | None, typer.Option(help="Catalog file.")] = None,
) -> None:
    """Run SQL against the catalog and print the result as a table."""
    from curation.catalog import Catalog

    with user_errors():
        result = Catalog(db or default_home() / "catalog.duckdb").query(sql)
    table = Table(*result.column_names)
    for row in result.to_pylist():
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


def _base_kinds() -> str:
    return " or ".join(k.name for k in PROXY_KINDS.values() if k.takes_base)


def _parse_floats(text: str, option: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CurationError(f"{option} must be comma-separated numbers, got {text!r}") from None


def _parse_seed_count(text: str) -> list[int]:
    """``3`` means seeds 0, 1, 2; ``0,4,7`` means exactly those seeds."""
    seeds = _parse_seeds(text)
    if len(seeds) == 1 and "," not in text:
        if seeds[0] < 1:
            raise CurationError(f"--seeds count must be at least 1, got {seeds[0]}")
        return list(range(seeds[0]))
    return seeds


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CurationError(f"--seeds must be comma-separated integers, got {text!r}") from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
