"""Building, evaluating and writing a distilled set.

``distill`` builds one in four steps:

1. **Choose** ``per_class`` pool rows of every class: at random (seeded), or the top-ranked
   members of each class in a selection (any selector's Parquet, GTP included).
2. **Experts**: the student architecture trained with Adam on the whole pool (or only on the
   selection, ``expert_data``), keeping the initialization and every epoch as safetensors
   checkpoints (``curation.distill.experts``).
3. **Labels**: ``soft`` = the first expert's softmax at ``expert_epoch`` (0: its random
   initialization) with ``temperature``; ``shuffled`` = the same with each row's non-top
   entries permuted; ``hard`` = one-hot (``curation.distill.labels``).
4. **Method**: ``real`` keeps the chosen inputs; ``tm`` learns synthetic inputs initialized
   from them by trajectory matching (``curation.distill.matching``), with soft labels also the
   labels and the student's learning rate.

Labels are stored as float16, optionally truncated to the ``top_k`` largest classes. For text
pools ``features`` holds the sentence embedding, the input the student actually trains on
(trajectory matching learns embeddings, not text). Evaluation trains fresh students on the set
as stored (``curation.distill.students``) and scores them on the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from curation.distill.config import DistillConfig
from curation.distill.experts import checkpoint_at, load_expert, train_expert, trajectory
from curation.distill.labels import compact_labels, remove_structure, teacher_soft_labels
from curation.distill.matching import match_trajectories
from curation.distill.sets import (
    DistilledSet,
    choose_rows,
    read_distilled,
    read_ranking,
    save_image_grid,
    storage_cost,
    write_distilled,
)
from curation.distill.students import StudentSpec, StudentTraining, evaluate_students
from curation.embed import input_matrix
from curation.errors import CurationError
from curation.evaluate import EvalResult, accuracy
from curation.io import sha256_file, write_json
from curation.lineage import code_version, config_hash
from curation.networks import declared_shape, image_shape
from curation.pool import Pool, n_classes_of


def distill(inputs: np.ndarray, labels: np.ndarray, ids: np.ndarray, n_classes: int,
            config: DistillConfig, work_dir: str | Path, data_id: str,
            ranked: np.ndarray | None = None, progress: bool = False,
            shape: tuple[int, ...] | None = None) -> DistilledSet:
    """Build a distilled set from pool (inputs, labels, ids); ``ranked`` = selection rows,
    ``shape`` = the pool's declared image shape (a convnet otherwise infers it)."""
    if config.top_k is not None and config.top_k > n_classes:
        raise CurationError(f"'top_k' {config.top_k} exceeds the number of classes ({n_classes})")
    if config.expert_data == "selection" and ranked is None:
        raise CurationError("'expert_data' = 'selection' needs a selection")
    config = replace(config, model=config.model.for_inputs(inputs.shape[1], shape))
    rows = choose_rows(labels, config.per_class, ranked=ranked, seed=config.seed)
    chosen_x, chosen_y = inputs[rows], labels[rows]
    train = np.sort(ranked) if config.expert_data == "selection" else np.arange(len(inputs))
    train_id = data_id if config.expert_data == "pool" else config_hash(
        {"data_id": data_id, "rows": train.tolist()})
    experts = [train_expert(inputs[train], labels[train], n_classes, work_dir, train_id, config, e)
               for e in range(config.expert.experts if config.needs_experts else 0)]
    targets = distilled_targets(config, experts[0] if experts else None, chosen_x, chosen_y,
                                n_classes)
    info: dict = {"config": asdict(config), "config_hash": config_hash(asdict(config)),
                  "data_id": data_id, "n_classes": n_classes,
                  "experts": [[c.sha256 for c in e.checkpoints] for e in experts],
                  "expert_dirs": [str(e.checkpoints[0].model_path.parent) for e in experts]}
    new_ids = ids[rows]
    if config.method == "tm":
        result = match_trajectories(
            chosen_x, targets, [trajectory(e) for e in experts], config.model, config.matching,
            learn_labels=config.labels != "hard" and config.matching.learn_labels,
            seed=config.seed, progress=progress, training=config.student)
        chosen_x, targets = result.inputs, result.soft_labels
        new_ids = np.array([f"tm-{config_hash(info)[:8]}-{i:05d}" for i in range(len(rows))],
                           dtype=object)
        info["matching"] = {"lr": result.lr, "initial_lr": result.initial_lr,
                            "loss_first": result.losses[0], "loss_last": result.losses[-1],
                            "loss_min": min(result.losses)}
    return DistilledSet(new_ids, ids[rows], chosen_x.astype(np.float32), chosen_y,
                        compact_labels(targets, config.top_k), info)


def distilled_targets(config: DistillConfig, expert, inputs: np.ndarray, labels: np.ndarray,
                      n_classes: int) -> np.ndarray:
    """The label rows of ``config.labels`` for (inputs, labels): float32 (n, classes)."""
    if config.labels == "hard":
        return np.eye(n_classes, dtype=np.float32)[labels]
    soft = teacher_soft_labels(expert, config.label_epoch, inputs, config.temperature)
    return soft if config.labels == "soft" else remove_structure(soft, config.seed)


def evaluate_distilled(distilled: DistilledSet, test_x: np.ndarray, test_y: np.ndarray,
                       n_classes: int, spec: StudentSpec, seeds: Sequence[int],
                       training: StudentTraining = StudentTraining()  # noqa: B008 - frozen
                       ) -> EvalResult:
    """Test accuracy of fresh students trained on the stored soft labels, one per seed."""
    return evaluate_students(distilled.inputs, distilled.training_targets(), test_x, test_y,
                             n_classes, spec, training, seeds)


@dataclass(frozen=True)
class DistillOutputs:
    """What ``run_distill`` wrote and measured."""

    distilled: Path
    evaluation: Path
    lineage: Path
    grid: Path | None
    result: EvalResult
    storage: dict
    size: int
    record: dict  # the content of evaluation.json


def run_distill(pool: Pool, test: Pool, config: DistillConfig, out_dir: str | Path,
                work_dir: str | Path, *, selection: str | Path | None = None,
                eval_seeds: Sequence[int] = (0, 1, 2), inputs: np.ndarray | None = None,
                test_inputs: np.ndarray | None = None, progress: bool = False) -> DistillOutputs:
    """Distill ``pool``, evaluate on ``test`` and write ``distilled.parquet``,
    ``evaluation.json``, ``lineage.json`` (and ``grid.png`` for image inputs) to ``out_dir``."""
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    if config.model.kind == "convnet" and pool.input_column != "features":
        raise CurationError(f"{pool.source}: a convnet needs image 'features', but the pool's "
                            f"input is {pool.input_column!r}; use a linear or mlp model")
    n_classes = n_classes_of(pool, test)
    ranked = read_ranking(selection, pool.ids) if selection is not None else None
    cache = work_dir / "embeddings"
    pool_x = input_matrix(pool, cache, progress) if inputs is None else inputs
    test_x = input_matrix(test, cache, progress) if test_inputs is None else test_inputs
    if pool_x.shape[1] != test_x.shape[1]:
        raise CurationError(f"test inputs have {test_x.shape[1]} dims but the pool has {pool_x.shape[1]}")
    declared = declared_shape(pool) if pool.input_column == "features" else None
    spec = config.model.for_inputs(pool_x.shape[1], declared, source=pool.source)
    distilled = distill(pool_x, pool.labels, pool.ids, n_classes, config, work_dir,
                        pool.content_hash, ranked, progress, shape=declared)
    path = write_distilled(out_dir / "distilled.parquet", distilled)
    stored = read_distilled(path)
    result = evaluate_distilled(stored, test_x, test.labels, n_classes, spec, eval_seeds,
                                config.student)
    storage = storage_cost(path)
    record = {**result.to_dict(), "seeds": list(eval_seeds), "size": len(stored),
              "per_class": config.per_class, "labels": config.labels, "method": config.method,
              "model": config.model.kind, "storage": storage}
    if config.labels != "hard":
        teacher = load_expert(distilled.info["expert_dirs"][0])
        record["teacher_test_accuracy"] = accuracy(
            teacher.load_model(checkpoint_at(teacher, config.label_epoch)), test_x, test.labels)
    evaluation = write_json(out_dir / "evaluation.json", record)
    lineage = write_json(out_dir / "lineage.json", {
        **distilled.info, "pool_id": pool.content_hash, "input_column": pool.input_column,
        "selection": None if selection is None else {
            "path": str(selection), "sha256": sha256_file(selection)},
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds")})
    shape = _grid_shape(pool_x.shape[1], declared) if pool.input_column == "features" else None
    grid = save_image_grid(out_dir / "grid.png", stored.inputs, stored.labels, shape) \
        if shape else None
    return DistillOutputs(path, evaluation, lineage, grid, result, storage, len(stored), record)


def _grid_shape(length: int, declared: tuple[int, ...] | None) -> tuple[int, int, int] | None:
    try:
        return image_shape(length, declared)
    except CurationError:  # not images: no grid
        return None
