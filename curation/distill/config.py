"""The configs of a distilled set: experts, trajectory matching, and the set itself."""

from __future__ import annotations

from pydantic import Field, model_validator

from curation.config import choice, config
from curation.distill.students import StudentSpec, StudentTraining
from curation.proxies.classifier import WarmupConfig

# soft: the expert's softmax; hard: one-hot; shuffled: the expert's softmax with each row's
# non-top entries permuted (same top class and smoothing, the class-similarity structure gone).
LABEL_KINDS = ("soft", "hard", "shuffled")
METHODS = ("real", "tm")
# sgd: plain gradient steps at a learned step size; adam: the convnet students' own optimizer.
INNER_OPTIMIZERS = ("sgd", "adam")
EXPERT_DATA = ("pool", "selection")


@config("expert")
class ExpertConfig:
    """Expert trajectories: the student architecture trained on the pool, checkpoint per epoch.

    The defaults suit pools of a few thousand examples (about 50 Adam steps per epoch), where a
    small learning rate keeps the trajectory gradual, as trajectory matching needs. Much smaller
    pools take fewer steps per epoch: raise ``lr`` or ``epochs`` there (``evaluation.json``
    reports the teacher's test accuracy).
    """

    epochs: int = Field(default=10, ge=1, description="Expert epochs (one checkpoint each).")
    lr: float = Field(default=1e-3, gt=0, description="Expert Adam learning rate.")
    batch_size: int = Field(default=64, ge=1, description="Expert minibatch size.")
    experts: int = Field(default=1, ge=1, description="Expert trajectories (seeds).")

    def warmup(self, seed: int, index: int) -> WarmupConfig:
        # Derived seeds: expert ``index`` of chain seed ``seed`` is reproducible on its own.
        return WarmupConfig(fraction=1.0, epochs=self.epochs, checkpoints=self.epochs,
                            lr=self.lr, batch_size=self.batch_size, seed=seed + 1000 * index,
                            initial_checkpoint=True)


@config("matching")
class MatchingConfig:
    """Trajectory matching: ``syn_steps`` unrolled student steps should cover ``expert_epochs``
    expert epochs, starting from an epoch drawn from ``0..max_start_epoch``.

    ``optimizer="adam"`` unrolls the steps convnet students take when they are evaluated (Adam
    at ``StudentTraining``'s lr and weight decay, from zero moments), so the set is learned for
    the training that uses it; set ``syn_steps`` to the students' steps and start at epoch 0
    (``max_start_epoch=0``), where fresh students start.
    """

    iterations: int = Field(default=200, ge=1, description="Trajectory-matching iterations.")
    syn_steps: int = Field(default=40, ge=1, description="Unrolled student steps per iteration.")
    expert_epochs: int = Field(default=5, ge=1, description="Expert epochs the student steps cover.")
    max_start_epoch: int = Field(default=5, ge=0, description="Latest expert start epoch drawn.")
    lr_inputs: float = Field(default=1e-2, gt=0, description="Learning rate of the synthetic inputs.")
    lr_labels: float = Field(default=1e-2, gt=0, description="Learning rate of the soft labels.")
    lr_lr: float = Field(default=1e-2, gt=0, description="Learning rate of the student step size.")
    learn_labels: bool = Field(default=True, description="Learn the soft labels too.")
    learn_lr: bool = Field(default=True, description=(
        "Learn the student step size too (sgd only: adam steps keep the students' lr)."))
    optimizer: choice(INNER_OPTIMIZERS) = Field(default="sgd", description=(
        "Unrolled student steps: sgd (plain gradient steps, learned step size) or adam (the "
        "convnet students' Adam: their lr and weight decay, zero initial moments)."))
    batch_size: int | None = Field(
        default=None, ge=1, description="Synthetic rows per unrolled step (None: all of them).")


@config("distill")
class DistillConfig:
    """How a distilled set is built: size, label kind, method, and the experts behind it."""

    per_class: int = Field(default=10, ge=1, description="Distilled examples per class.")
    labels: choice(LABEL_KINDS) = Field(default="soft", description=(
        "soft (expert soft labels), hard (one-hot) or shuffled (expert soft labels with each "
        "row's non-top entries permuted: the structure removed)."))
    method: choice(METHODS) = Field(default="real", description=(
        "real (chosen examples) or tm (trajectory matching, synthetic inputs)."))
    temperature: float = Field(default=4.0, gt=0, description="Soft-label temperature.")
    expert_epoch: int | None = Field(default=None, description=(
        "Expert epoch of the soft labels (0: the random initialization; default: the last)."))
    top_k: int | None = Field(
        default=None, ge=1, description="Keep only the k largest soft-label entries per row.")
    expert_data: choice(EXPERT_DATA) = Field(
        default="pool", description="What the experts train on: the pool or the selection.")
    model: StudentSpec = Field(default_factory=StudentSpec, description="Expert and student model.")
    student: StudentTraining = Field(default_factory=StudentTraining,
                                     description="How convnet students are trained.")
    expert: ExpertConfig = Field(default_factory=ExpertConfig, description="Expert trajectories.")
    matching: MatchingConfig = Field(default_factory=MatchingConfig, description="Trajectory matching.")
    seed: int = Field(default=0, description="Seed of the choice, the experts and matching.")

    @model_validator(mode="after")
    def _fits_the_experts(self):
        if self.expert_epoch is not None and not 0 <= self.expert_epoch <= self.expert.epochs:
            raise ValueError(
                f"'expert_epoch' {self.expert_epoch} is outside the expert trajectory "
                f"(epochs 0..{self.expert.epochs}, 0 = the initialization)")
        last = self.matching.max_start_epoch + self.matching.expert_epochs
        if self.method == "tm" and last > self.expert.epochs:
            raise ValueError(
                f"trajectory matching reaches epoch {last} (max_start_epoch + expert_epochs) "
                f"but the expert trajectory has {self.expert.epochs} epochs")
        return self

    @property
    def label_epoch(self) -> int:
        return self.expert_epoch if self.expert_epoch is not None else self.expert.epochs

    @property
    def needs_experts(self) -> bool:
        return self.labels != "hard" or self.method == "tm"
