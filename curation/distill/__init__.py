"""Distilled sets: a few examples per class with teacher soft labels, optionally optimized by
trajectory matching; one module per concept:

- ``config``: ``DistillConfig`` and its ``ExpertConfig`` / ``MatchingConfig`` parts;
- ``students``: the student / expert model (``linear``, ``mlp``, ``convnet``) and how fresh
  students are trained and scored;
- ``experts``: expert trajectories (a checkpoint per epoch, cached);
- ``labels``: teacher soft labels, the structure-removed control, the stored form;
- ``matching``: trajectory matching;
- ``sets``: the stored set (Parquet), the rows chosen, storage cost, image grid;
- ``pipeline``: ``distill``, ``evaluate_distilled``, ``run_distill``.
"""

from curation.distill.config import (
    EXPERT_DATA,
    LABEL_KINDS,
    METHODS,
    DistillConfig,
    ExpertConfig,
    MatchingConfig,
)
from curation.distill.experts import checkpoint_at, load_expert, train_expert, trajectory
from curation.distill.labels import compact_labels, remove_structure, teacher_soft_labels
from curation.distill.matching import MatchResult, match_trajectories, matching_loss
from curation.distill.pipeline import (
    DistillOutputs,
    distill,
    distilled_targets,
    evaluate_distilled,
    run_distill,
)
from curation.distill.sets import (
    DistilledSet,
    choose_rows,
    read_distilled,
    read_ranking,
    save_image_grid,
    storage_cost,
    write_distilled,
)
from curation.distill.students import (
    STUDENT_KINDS,
    StudentSpec,
    StudentTraining,
    evaluate_students,
    fit_student,
)

__all__ = [
    "EXPERT_DATA", "LABEL_KINDS", "METHODS", "STUDENT_KINDS", "DistillConfig", "DistillOutputs",
    "DistilledSet", "ExpertConfig", "MatchResult", "MatchingConfig", "StudentSpec",
    "StudentTraining", "checkpoint_at", "choose_rows", "compact_labels", "distill",
    "distilled_targets", "evaluate_distilled", "evaluate_students", "fit_student", "load_expert",
    "match_trajectories", "matching_loss", "read_distilled", "read_ranking", "remove_structure",
    "run_distill", "save_image_grid", "storage_cost", "teacher_soft_labels", "train_expert",
    "trajectory", "write_distilled",
]
