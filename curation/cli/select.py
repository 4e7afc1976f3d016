"""``curation select`` and ``curation evaluate``: a subset of a pool, and how well it trains."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from curation.cli.common import (
    DEFAULT_DIM,
    DIM_HELP,
    LM_BASE_HELP,
    PROXY_HELP,
    ProxyName,
    base_kinds,
    console,
    parse_seeds,
    user_errors,
    work_directory,
)
from curation.cli.options import PARAM_HELP, parse_params
from curation.errors import CurationError
from curation.proxies import proxy_kind


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
    dim: Annotated[int, typer.Option(help=DIM_HELP)] = DEFAULT_DIM,
    lm_base: Annotated[Path | None, typer.Option(help=LM_BASE_HELP)] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Cache for embeddings, proxies, stores.")]
    = None,
    param: Annotated[list[str] | None, typer.Option(help=PARAM_HELP)] = None,
) -> None:
    """Select a subset of POOL and write it as a Selection with its lineage."""
    from curation.cli.common import open_catalog
    from curation.io import check_output_file, write_json, write_parquet
    from curation.pool import load_pool
    from curation.selectors import SELECTORS, make_selector, resolve_budget, takes_seed
    from curation.workflow import run_selection

    kind = proxy_kind(proxy)
    with user_errors():
        if out.suffix != ".parquet":
            raise CurationError(f"--out must be a .parquet path, got {out}")
        check_output_file(out, "--out")
        check_output_file(out.with_suffix(".lineage.json"), "--out's lineage file")
        work = work_directory(work_dir)
        params = {"seed": seed} if takes_seed(method) else {}
        selector = make_selector(method, **{**params, **parse_params(param)})
        if lm_base is not None and not kind.takes_base:
            raise CurationError(f"--lm-base needs --proxy {base_kinds()}")
        pool_data = load_pool(pool, role="pool", require_label=kind.needs_labels)
        resolve_budget(budget, len(pool_data))
        target_data = None
        if target is not None:
            target_data = load_pool(target, role="target", require_label=kind.needs_labels,
                                    pool=pool_data)
        elif "target" in SELECTORS[method].needs:
            raise CurationError(f"selector {method!r} needs --target")
        settings = kind.settings(work, pool_data, target_data, checkpoints=checkpoints, dim=dim,
                                 seed=seed, base=lm_base)
        selection, lineage = run_selection(pool_data, target_data, selector, budget, work,
                                           settings, progress=True)
        lineage_path = out.with_suffix(".lineage.json")
        write_json(lineage_path, lineage)
        write_parquet(out, selection.to_table())
        open_catalog(None).record_selection_file(out, lineage, pool_data, pool)
    console.print(f"selected {len(selection)} of {len(pool_data)} examples -> {out}")
    console.print(f"lineage (config {lineage['config_hash']}) -> {lineage_path}")


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
    from curation.io import check_output_file, write_json
    from curation.pool import load_pool
    from curation.proxies import EvalData
    from curation.selection import read_selection

    kind = proxy_kind(proxy)
    with user_errors():
        seed_list = parse_seeds(seeds)
        if out is not None:
            check_output_file(out, "--out")
        work = work_directory(work_dir)
        pool_data = load_pool(pool, role="pool", require_label=kind.needs_labels)
        test_data = load_pool(test, role="test", require_label=kind.needs_labels, pool=pool_data)
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
