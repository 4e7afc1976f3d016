"""``curation distill``: a few examples per class with teacher soft labels.

Options derive from ``curation.distill.DistillConfig`` (``config_options``); the options of
its nested parts keep the names users know (``--model`` is ``StudentSpec.kind``,
``--expert-epochs`` / ``--expert-lr`` are ``ExpertConfig.epochs`` / ``lr``, ``--iterations``
is ``MatchingConfig.iterations``) and read default and help from those fields.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from curation.cli.common import console, parse_seeds, user_errors, work_directory
from curation.cli.options import choices_of, config_options
from curation.config import config_fields, default_of
from curation.distill.config import DistillConfig, ExpertConfig, MatchingConfig
from curation.distill.students import StudentSpec

# ``expert_epoch`` is checked against ``--expert-epochs``, so it joins the config with it.
_TOP = ("per_class", "labels", "method", "temperature", "top_k", "expert_data", "seed")
_MODEL_KINDS = choices_of(config_fields(StudentSpec)["kind"].annotation)


def _help(cls: type, name: str) -> str:
    return config_fields(cls, (name,))[name].description or ""


@config_options(StudentSpec, "student", only=("width", "depth", "hidden"))
@config_options(DistillConfig, "config", only=_TOP, helps={
    "per_class": "Distilled examples per class."})
def distill(
    pool: Annotated[Path, typer.Option(help="Pool to distill (its experts train on all of it).")],
    test: Annotated[Path, typer.Option(help="Held-out test split for the students.")],
    out: Annotated[Path, typer.Option(help="Directory for distilled.parquet, evaluation.json.")],
    selection: Annotated[Path | None, typer.Option(
        help="Selection Parquet: take its top-ranked members per class (default: random).")]
    = None,
    model: Annotated[str, typer.Option(
        help=_help(StudentSpec, "kind"), metavar="[" + "|".join(_MODEL_KINDS) + "]")]
    = default_of(StudentSpec, "kind"),
    expert_epoch: Annotated[int | None, typer.Option(help=_help(DistillConfig, "expert_epoch"))]
    = default_of(DistillConfig, "expert_epoch"),
    expert_epochs: Annotated[int, typer.Option(help=_help(ExpertConfig, "epochs"))]
    = default_of(ExpertConfig, "epochs"),
    expert_lr: Annotated[float, typer.Option(help=_help(ExpertConfig, "lr"))]
    = default_of(ExpertConfig, "lr"),
    iterations: Annotated[int, typer.Option(help=_help(MatchingConfig, "iterations"))]
    = default_of(MatchingConfig, "iterations"),
    seeds: Annotated[str, typer.Option(help="Comma-separated student training seeds.")]
    = "0,1,2",
    work_dir: Annotated[Path | None, typer.Option(help="Cache for embeddings and experts.")]
    = None,
    config: DistillConfig = DistillConfig(),  # noqa: B008 - frozen; the options build it
    student: StudentSpec = StudentSpec(),  # noqa: B008 - frozen; the options build it
) -> None:
    """Distill POOL to PER_CLASS examples per class, train fresh students on it, score on TEST."""
    from curation.distill import run_distill
    from curation.io import check_output_dir
    from curation.pool import load_pool

    with user_errors():
        config = replace(
            config, model=replace(student, kind=model), expert_epoch=expert_epoch,
            expert=replace(config.expert, epochs=expert_epochs, lr=expert_lr),
            matching=replace(config.matching, iterations=iterations))
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
