"""``curation distill``: a few examples per class with teacher soft labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curation.cli.common import console, parse_seeds, user_errors, work_directory


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
    from curation.io import check_output_dir
    from curation.pool import load_pool
    from curation.proxies.classifier import ProxySpec

    with user_errors():
        config = DistillConfig(
            per_class=per_class, labels=labels, method=method, temperature=temperature,
            expert_epoch=expert_epoch, top_k=top_k, expert_data=expert_data,
            model=ProxySpec(model),
            expert=ExpertConfig(epochs=expert_epochs, lr=expert_lr),
            matching=MatchingConfig(iterations=iterations), seed=seed)
        seed_list = parse_seeds(seeds)
        check_output_dir(out, "--out")
        work = work_directory(work_dir)
        pool_data = load_pool(pool, role="pool")
        test_data = load_pool(test, role="test", pool=pool_data)
        outputs = run_distill(pool_data, test_data, config, out, work, selection=selection,
                              eval_seeds=seed_list, progress=True)
    storage = outputs.storage
    console.print(f"distilled {outputs.size} examples -> {outputs.distilled}")
    console.print(f"soft labels {storage['label_bytes']} B vs inputs {storage['input_bytes']} B "
                  f"on disk ({storage['label_to_input']:.1%}); raw {storage['label_bytes_raw']} B "
                  f"vs {storage['input_bytes_raw']} B ({storage['label_to_input_raw']:.2%})")
    console.print(f"test accuracy {outputs.result.mean:.4f} ± {outputs.result.std:.4f} over seeds "
                  f"{seed_list} -> {outputs.evaluation}")
