"""Distilled sets: a few examples per class with teacher soft labels, optionally optimized by
trajectory matching.

``distill`` builds one in four steps:

1. **Choose** ``per_class`` pool rows of every class: at random (seeded), or the top-ranked
   members of each class in a selection (any selector's Parquet, GTP included).
2. **Experts**: the student architecture trained with Adam on the whole pool (or only on the
   selection, ``expert_data``), keeping the initialization and every epoch as safetensors
   checkpoints (``curation.proxies.classifier.warmup``).
3. **Labels**: ``soft`` = the first expert's softmax at ``expert_epoch`` with ``temperature``;
   ``hard`` = one-hot.
4. **Method**: ``real`` keeps the chosen inputs. ``tm`` (matching training trajectories,
   Cazenavette et al. 2022) learns synthetic inputs initialized from them, and with soft labels
   also the labels and the student's learning rate: a student started at expert checkpoint
   ``t`` and trained ``syn_steps`` unrolled SGD steps on the synthetic set should land near
   checkpoint ``t + expert_epochs``. The loss is the normalized parameter distance
   ``|theta_student - theta_{t+M}|^2 / |theta_t - theta_{t+M}|^2``, differentiated through
   the unrolled steps with ``torch.func``.

Labels are stored as float16, optionally truncated to the ``top_k`` largest classes. A
distilled set is itself a pool in the data contract (``id``, ``features``, ``label``) plus
``soft_label`` and ``source_id`` (the pool example a row is, or was initialized from). For
text pools ``features`` holds the sentence embedding, the input the student actually trains on
(trajectory matching learns embeddings, not text). Evaluation trains fresh students on the set
as stored, with ``curation.evaluate`` (soft cross-entropy), and scores them on the test split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import Field, model_validator
from safetensors.torch import load_file
from torch import nn
from torch.func import functional_call, grad
from tqdm.auto import tqdm

from curation.config import choice, config
from curation.embed import input_matrix
from curation.errors import CurationError
from curation.evaluate import EvalConfig, EvalResult, accuracy, evaluate_subset, soft_cross_entropy
from curation.io import atomic_path, sha256_file, write_json, write_parquet
from curation.lineage import code_version, config_hash
from curation.pool import Pool, n_classes_of
from curation.proxies.classifier import Proxy, ProxySpec, WarmupConfig, cached_classifier, load_proxy
from curation.selection import read_selection
from curation.training import numpy_rng

LABEL_KINDS = ("soft", "hard")
METHODS = ("real", "tm")
EXPERT_DATA = ("pool", "selection")
# Inputs of these widths are shown as images: MNIST pixels and scikit-learn digits.
IMAGE_SHAPES = {784: (28, 28), 64: (8, 8)}
_METADATA_KEY = b"curation.distill"

Params = dict[str, torch.Tensor]


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
    expert epochs, starting from an epoch drawn from ``0..max_start_epoch``."""

    iterations: int = Field(default=200, ge=1, description="Matching iterations.")
    syn_steps: int = Field(default=40, ge=1, description="Unrolled student steps per iteration.")
    expert_epochs: int = Field(default=5, ge=1, description="Expert epochs the student steps cover.")
    max_start_epoch: int = Field(default=5, ge=0, description="Latest expert start epoch drawn.")
    lr_inputs: float = Field(default=1e-2, gt=0, description="Learning rate of the synthetic inputs.")
    lr_labels: float = Field(default=1e-2, gt=0, description="Learning rate of the soft labels.")
    lr_lr: float = Field(default=1e-2, gt=0, description="Learning rate of the student step size.")
    learn_labels: bool = Field(default=True, description="Learn the soft labels too.")
    learn_lr: bool = Field(default=True, description="Learn the student step size too.")
    batch_size: int | None = Field(
        default=None, ge=1, description="Synthetic rows per unrolled step (None: all of them).")


@config("distill")
class DistillConfig:
    """How a distilled set is built: size, label kind, method, and the experts behind it."""

    per_class: int = Field(default=10, ge=1, description="Examples per class.")
    labels: choice(LABEL_KINDS) = Field(default="soft", description="soft (expert) or hard labels.")
    method: choice(METHODS) = Field(default="real", description="real rows, or tm (trajectory matching).")
    temperature: float = Field(default=4.0, gt=0, description="Soft-label temperature.")
    expert_epoch: int | None = Field(
        default=None, description="Soft labels from this expert epoch (None: the last).")
    top_k: int | None = Field(
        default=None, ge=1, description="Keep only the k largest soft-label entries per row.")
    expert_data: choice(EXPERT_DATA) = Field(default="pool", description="What the experts train on.")
    model: ProxySpec = Field(default_factory=ProxySpec, description="Student architecture.")
    expert: ExpertConfig = Field(default_factory=ExpertConfig, description="Expert trajectories.")
    matching: MatchingConfig = Field(default_factory=MatchingConfig, description="Trajectory matching.")
    seed: int = Field(default=0, description="Seed of the rows, experts and matching.")

    @model_validator(mode="after")
    def _fits_the_experts(self):
        if self.expert_epoch is not None and not 1 <= self.expert_epoch <= self.expert.epochs:
            raise ValueError(
                f"'expert_epoch' {self.expert_epoch} is outside the expert trajectory "
                f"(epochs 1..{self.expert.epochs})")
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
        return self.labels == "soft" or self.method == "tm"


@dataclass(frozen=True)
class DistilledSet:
    """Distilled rows: inputs, class, float16 soft labels, and where each row came from."""

    ids: np.ndarray
    source_ids: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    soft_labels: np.ndarray
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def training_targets(self) -> np.ndarray:
        """Stored soft labels as float32 rows summing to one (float16 rounding undone)."""
        q = self.soft_labels.astype(np.float32)
        return q / q.sum(axis=1, keepdims=True)

    def to_table(self) -> pa.Table:
        n_classes = self.soft_labels.shape[1]
        soft = pa.FixedSizeListArray.from_arrays(
            pa.array(self.soft_labels.reshape(-1), pa.float16()), n_classes)
        features = pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(self.inputs, np.float32).reshape(-1)),
            self.inputs.shape[1])
        table = pa.table({
            "id": pa.array(list(self.ids), pa.string()),
            "features": features,
            "label": pa.array(self.labels, pa.int64()),
            "soft_label": soft,
            "source_id": pa.array(list(self.source_ids), pa.string()),
        })
        return table.replace_schema_metadata({_METADATA_KEY: json.dumps(self.info, sort_keys=True)})


def write_distilled(path: str | Path, distilled: DistilledSet) -> Path:
    return write_parquet(path, distilled.to_table())


def read_distilled(path: str | Path) -> DistilledSet:
    """Open a distilled set written by ``write_distilled``."""
    path = Path(path)
    if not path.exists():
        raise CurationError(f"distilled set not found: {path}")
    table = pq.read_table(path)
    missing = [c for c in ("id", "features", "label", "soft_label", "source_id")
               if c not in table.column_names]
    if missing:
        raise CurationError(f"{path}: not a distilled set, missing columns {missing}")

    def matrix(name: str, dtype) -> np.ndarray:
        column = table.column(name).combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False).astype(dtype)
        return values.reshape(table.num_rows, -1)

    metadata = (table.schema.metadata or {}).get(_METADATA_KEY)
    return DistilledSet(
        np.asarray(table.column("id").to_pylist(), dtype=object),
        np.asarray(table.column("source_id").to_pylist(), dtype=object),
        matrix("features", np.float32), table.column("label").to_numpy().astype(np.int64),
        matrix("soft_label", np.float16), json.loads(metadata) if metadata else {})


def choose_rows(labels: np.ndarray, per_class: int, *, ranked: np.ndarray | None = None,
                seed: int = 0) -> np.ndarray:
    """``per_class`` pool rows of every class present in ``labels``, class by class.

    Without ``ranked`` the rows are drawn at random (seeded); with it (pool rows in rank order,
    e.g. a selection) the first ``per_class`` members of each class are taken.
    """
    if per_class < 1:
        raise CurationError(f"'per_class' must be at least 1 example per class, got {per_class}")
    rng = numpy_rng(seed)
    chosen = []
    for c in np.unique(labels):
        if ranked is None:
            members = np.flatnonzero(labels == c)
            if len(members) < per_class:
                raise CurationError(f"class {c} has only {len(members)} examples in the pool, "
                                    f"fewer than per_class={per_class}")
            chosen.append(np.sort(rng.choice(members, per_class, replace=False)))
        else:
            members = ranked[labels[ranked] == c]
            if len(members) < per_class:
                raise CurationError(f"the selection has only {len(members)} examples of class {c}, "
                                    f"fewer than per_class={per_class}; use a larger selection")
            chosen.append(members[:per_class])
    return np.concatenate(chosen)


def read_ranking(path: str | Path, pool_ids: np.ndarray) -> np.ndarray:
    """Pool rows of a selection Parquet (column ``id``), ordered by ``rank`` if present."""
    return read_selection(path, pool_ids, by_rank=True)[0]


def train_expert(inputs: np.ndarray, labels: np.ndarray, n_classes: int, work_dir: str | Path,
                 data_id: str, config: DistillConfig, index: int = 0) -> Proxy:
    """Expert trajectory ``index`` on (inputs, labels), cached in ``work_dir`` like warm-up
    proxies (same content-addressed layout, keyed by ``data_id`` and the training config)."""
    return cached_classifier(Path(work_dir), data_id, inputs, labels, n_classes, config.model,
                             config.expert.warmup(config.seed, index))


def trajectory(expert: Proxy) -> list[Params]:
    """Expert parameters per epoch, index = epoch (0 is the initialization)."""
    epochs = [c.epoch for c in expert.checkpoints]
    if epochs != list(range(len(epochs))):
        raise CurationError(f"expert {expert.checkpoints[0].model_path.parent} lacks per-epoch "
                            f"checkpoints from epoch 0 (has {epochs})")
    return [load_file(c.model_path) for c in expert.checkpoints]


def teacher_soft_labels(expert: Proxy, epoch: int, inputs: np.ndarray,
                        temperature: float) -> np.ndarray:
    """The expert's softmax at ``epoch`` with ``temperature``: (n, classes) float32."""
    checkpoint = _checkpoint(expert, epoch)
    with torch.no_grad():
        logits = expert.load_model(checkpoint)(torch.from_numpy(np.array(inputs, np.float32)))
        return torch.softmax(logits / temperature, dim=1).numpy()


def compact_labels(probabilities: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Soft labels as stored: top-k truncated (renormalized, ties to the lower class), float16."""
    q = np.array(probabilities, dtype=np.float32)
    if top_k is not None and top_k < q.shape[1]:
        order = np.argsort(-q, axis=1, kind="stable")
        q[np.arange(len(q))[:, None], order[:, top_k:]] = 0.0
        q /= q.sum(axis=1, keepdims=True)
    return q.astype(np.float16)


def matching_loss(model: nn.Module, start: Params, target: Params, inputs: torch.Tensor,
                  targets: torch.Tensor, lr: torch.Tensor, syn_steps: int,
                  batches: Sequence[np.ndarray] | None = None) -> torch.Tensor:
    """Normalized distance to ``target`` after ``syn_steps`` SGD steps from ``start`` on
    (inputs, soft targets); differentiable in inputs, targets and lr."""

    def loss(params: Params, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(functional_call(model, params, (x,)), q).mean()

    step_grad = grad(loss)
    params = dict(start)
    for step in range(syn_steps):
        rows = slice(None) if batches is None else torch.from_numpy(batches[step])
        gradients = step_grad(params, inputs[rows], targets[rows])
        params = {k: p - lr * gradients[k] for k, p in params.items()}
    distance = sum(((params[k] - target[k]) ** 2).sum() for k in params)
    covered = sum(((start[k] - target[k]) ** 2).sum() for k in params)
    return distance / covered.clamp_min(1e-12)


@dataclass(frozen=True)
class MatchResult:
    """Learned inputs and soft labels, the final and initial student lr, loss per iteration."""

    inputs: np.ndarray
    soft_labels: np.ndarray
    lr: float
    initial_lr: float
    losses: list[float]


def match_trajectories(inputs: np.ndarray, soft_labels: np.ndarray,
                       trajectories: Sequence[Sequence[Params]], spec: ProxySpec,
                       config: MatchingConfig, learn_labels: bool, seed: int = 0,
                       progress: bool = False) -> MatchResult:
    """Learn synthetic inputs (and labels, lr) so that students follow the expert trajectories.

    Each iteration draws an expert, a start epoch ``t`` and (optionally) minibatches, and takes
    one Adam step on the matching loss. The student learning rate starts where ``syn_steps``
    plain gradient steps from the initialization would cover the expert's first
    ``expert_epochs`` epochs, so it needs no hand tuning.
    """
    # The unrolled ops are tiny: extra threads only add synchronization (10x slower measured
    # on two busy cores), so matching runs single-threaded and restores the setting after.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _match(inputs, soft_labels, trajectories, spec, config, learn_labels, seed,
                      progress)
    finally:
        torch.set_num_threads(threads)


def _match(inputs: np.ndarray, soft_labels: np.ndarray, trajectories: Sequence[Sequence[Params]],
           spec: ProxySpec, config: MatchingConfig, learn_labels: bool, seed: int,
           progress: bool) -> MatchResult:
    # Shares only the seeding with ``curation.training.train``: each outer Adam step is on the
    # synthetic data through an unrolled, differentiable inner loop, not on a model's minibatches.
    rng = numpy_rng(seed)
    n, n_classes = soft_labels.shape
    model = spec.build(inputs.shape[1], n_classes)
    x = torch.tensor(inputs, dtype=torch.float32, requires_grad=True)
    q = torch.tensor(soft_labels, dtype=torch.float32)
    # softmax(log q) = q, so learning starts from the given labels.
    label_logits = torch.log(q.clamp_min(1e-8)).requires_grad_(learn_labels)
    first = trajectories[0]
    initial_lr = _initial_lr(model, first[0], first[config.expert_epochs], x.detach(), q,
                             config.syn_steps)
    log_lr = torch.tensor(np.log(initial_lr), dtype=torch.float32,
                          requires_grad=config.learn_lr)
    groups = [{"params": [x], "lr": config.lr_inputs}]
    if learn_labels:
        groups.append({"params": [label_logits], "lr": config.lr_labels})
    if config.learn_lr:
        groups.append({"params": [log_lr], "lr": config.lr_lr})
    optimizer = torch.optim.Adam(groups)
    losses = []
    for _ in tqdm(range(config.iterations), desc="trajectory matching", disable=not progress):
        expert = trajectories[int(rng.integers(len(trajectories)))]
        t = int(rng.integers(config.max_start_epoch + 1))
        batches = None if config.batch_size is None or config.batch_size >= n else [
            np.sort(rng.choice(n, config.batch_size, replace=False))
            for _ in range(config.syn_steps)]
        targets = torch.softmax(label_logits, dim=1) if learn_labels else q
        loss = matching_loss(model, expert[t], expert[t + config.expert_epochs], x, targets,
                             log_lr.exp(), config.syn_steps, batches)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    final_labels = torch.softmax(label_logits, dim=1) if learn_labels else q
    return MatchResult(x.detach().numpy().copy(), final_labels.detach().numpy().copy(),
                       log_lr.exp().item(), initial_lr, losses)


def _initial_lr(model: nn.Module, start: Params, target: Params, x: torch.Tensor,
                q: torch.Tensor, syn_steps: int) -> float:
    gradients = grad(lambda p: soft_cross_entropy(functional_call(model, p, (x,)), q).mean())(start)
    gradient_norm = torch.sqrt(sum((g ** 2).sum() for g in gradients.values()))
    distance = torch.sqrt(sum(((target[k] - start[k]) ** 2).sum() for k in start))
    return float(distance / (syn_steps * gradient_norm.clamp_min(1e-12)))


def distill(inputs: np.ndarray, labels: np.ndarray, ids: np.ndarray, n_classes: int,
            config: DistillConfig, work_dir: str | Path, data_id: str,
            ranked: np.ndarray | None = None, progress: bool = False) -> DistilledSet:
    """Build a distilled set from pool (inputs, labels, ids); ``ranked`` = selection rows."""
    if config.top_k is not None and config.top_k > n_classes:
        raise CurationError(f"'top_k' {config.top_k} exceeds the number of classes ({n_classes})")
    if config.expert_data == "selection" and ranked is None:
        raise CurationError("'expert_data' = 'selection' needs a selection")
    rows = choose_rows(labels, config.per_class, ranked=ranked, seed=config.seed)
    chosen_x, chosen_y = inputs[rows], labels[rows]
    train = np.sort(ranked) if config.expert_data == "selection" else np.arange(len(inputs))
    train_id = data_id if config.expert_data == "pool" else config_hash(
        {"data_id": data_id, "rows": train.tolist()})
    experts = [train_expert(inputs[train], labels[train], n_classes, work_dir, train_id, config, e)
               for e in range(config.expert.experts if config.needs_experts else 0)]
    targets = (teacher_soft_labels(experts[0], config.label_epoch, chosen_x, config.temperature)
               if config.labels == "soft" else np.eye(n_classes, dtype=np.float32)[chosen_y])
    info: dict = {"config": asdict(config), "config_hash": config_hash(asdict(config)),
                  "data_id": data_id, "n_classes": n_classes,
                  "experts": [[c.sha256 for c in e.checkpoints] for e in experts],
                  "expert_dirs": [str(e.checkpoints[0].model_path.parent) for e in experts]}
    new_ids = ids[rows]
    if config.method == "tm":
        result = match_trajectories(
            chosen_x, targets, [trajectory(e) for e in experts], config.model, config.matching,
            learn_labels=config.labels == "soft" and config.matching.learn_labels,
            seed=config.seed, progress=progress)
        chosen_x, targets = result.inputs, result.soft_labels
        new_ids = np.array([f"tm-{config_hash(info)[:8]}-{i:05d}" for i in range(len(rows))],
                           dtype=object)
        info["matching"] = {"lr": result.lr, "initial_lr": result.initial_lr,
                            "loss_first": result.losses[0], "loss_last": result.losses[-1],
                            "loss_min": min(result.losses)}
    return DistilledSet(new_ids, ids[rows], chosen_x.astype(np.float32), chosen_y,
                        compact_labels(targets, config.top_k), info)


def evaluate_distilled(distilled: DistilledSet, test_x: np.ndarray, test_y: np.ndarray,
                       n_classes: int, config: EvalConfig) -> EvalResult:
    """Test accuracy of fresh students trained on the stored soft labels, one per seed."""
    return evaluate_subset(distilled.inputs, distilled.training_targets(), test_x, test_y,
                           n_classes, config)


def storage_cost(path: str | Path) -> dict:
    """Bytes of the label and input columns of a distilled Parquet file: on disk (encoded and
    compressed) and raw (rows x width x value size, e.g. float16 labels, float32 inputs)."""
    parquet = pq.ParquetFile(path)
    metadata, schema = parquet.metadata, parquet.schema_arrow
    on_disk: dict[str, int] = {}
    for g in range(metadata.num_row_groups):
        for c in range(metadata.num_columns):
            column = metadata.row_group(g).column(c)
            top = column.path_in_schema.split(".")[0]
            on_disk[top] = on_disk.get(top, 0) + column.total_compressed_size

    def raw(name: str) -> int:
        kind = schema.field(name).type
        return metadata.num_rows * kind.list_size * kind.value_type.bit_width // 8

    return {"label_bytes": on_disk["soft_label"], "input_bytes": on_disk["features"],
            "label_to_input": on_disk["soft_label"] / max(on_disk["features"], 1),
            "label_bytes_raw": raw("soft_label"), "input_bytes_raw": raw("features"),
            "label_to_input_raw": raw("soft_label") / raw("features"),
            "file_bytes": Path(path).stat().st_size}


def save_image_grid(path: str | Path, inputs: np.ndarray, labels: np.ndarray,
                    shape: tuple[int, int], max_per_class: int = 10) -> Path:
    """A PNG grid of the inputs as images: one row per class, up to ``max_per_class`` columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = np.unique(labels)
    columns = min(max_per_class, max(int((labels == c).sum()) for c in classes))
    fig, axes = plt.subplots(len(classes), columns, squeeze=False,
                             figsize=(0.6 * columns + 0.4, 0.6 * len(classes)))
    for ax in axes.ravel():
        ax.axis("off")
    for r, c in enumerate(classes):
        for col, row in enumerate(np.flatnonzero(labels == c)[:columns]):
            # Each image on its own scale: learned inputs leave the pixel range.
            axes[r, col].imshow(inputs[row].reshape(shape), cmap="gray")
        axes[r, 0].text(-0.1, 0.5, str(c), transform=axes[r, 0].transAxes, ha="right",
                        va="center", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


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
    eval_config = EvalConfig(config.model, seeds=tuple(eval_seeds))
    n_classes = n_classes_of(pool, test)
    ranked = read_ranking(selection, pool.ids) if selection is not None else None
    cache = work_dir / "embeddings"
    pool_x = input_matrix(pool, cache, progress) if inputs is None else inputs
    test_x = input_matrix(test, cache, progress) if test_inputs is None else test_inputs
    if pool_x.shape[1] != test_x.shape[1]:
        raise CurationError(f"test inputs have {test_x.shape[1]} dims but the pool has {pool_x.shape[1]}")
    distilled = distill(pool_x, pool.labels, pool.ids, n_classes, config, work_dir,
                        pool.content_hash, ranked, progress)
    path = write_distilled(out_dir / "distilled.parquet", distilled)
    stored = read_distilled(path)
    result = evaluate_distilled(stored, test_x, test.labels, n_classes, eval_config)
    storage = storage_cost(path)
    record = {**result.to_dict(), "seeds": list(eval_seeds), "size": len(stored),
              "per_class": config.per_class, "labels": config.labels, "method": config.method,
              "storage": storage}
    if config.labels == "soft":
        teacher = load_proxy(distilled.info["expert_dirs"][0])
        record["teacher_test_accuracy"] = accuracy(
            teacher.load_model(_checkpoint(teacher, config.label_epoch)), test_x, test.labels)
    evaluation = write_json(out_dir / "evaluation.json", record)
    lineage = write_json(out_dir / "lineage.json", {
        **distilled.info, "pool_id": pool.content_hash, "input_column": pool.input_column,
        "selection": None if selection is None else {
            "path": str(selection), "sha256": sha256_file(selection)},
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds")})
    shape = IMAGE_SHAPES.get(pool_x.shape[1]) if pool.input_column == "features" else None
    grid = save_image_grid(out_dir / "grid.png", stored.inputs, stored.labels, shape) \
        if shape else None
    return DistillOutputs(path, evaluation, lineage, grid, result, storage, len(stored), record)


def _checkpoint(expert: Proxy, epoch: int):
    for checkpoint in expert.checkpoints:
        if checkpoint.epoch == epoch:
            return checkpoint
    raise CurationError(f"epoch {epoch} is beyond the expert trajectory "
                        f"(epochs {[c.epoch for c in expert.checkpoints]})")
