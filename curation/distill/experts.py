"""Expert trajectories: the student architecture trained on the pool, a checkpoint per epoch.

Linear and mlp experts are ``curation.proxies.classifier`` proxies (``cached_classifier``);
convnet experts are trained by the same ``warmup`` and saved in the same content-addressed
layout, and opened here, since a proxy record only knows the classifier-head spec.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from curation.distill.config import DistillConfig
from curation.distill.students import StudentSpec
from curation.errors import CurationError
from curation.lineage import config_hash
from curation.proxies.base import Checkpoint, read_proxy_record
from curation.proxies.classifier import Proxy, WarmupConfig, cached_classifier, warmup

Params = dict[str, torch.Tensor]


def train_expert(inputs: np.ndarray, labels: np.ndarray, n_classes: int, work_dir: str | Path,
                 data_id: str, config: DistillConfig, index: int = 0) -> Proxy:
    """Expert trajectory ``index`` on (inputs, labels), cached in ``work_dir`` like warm-up
    proxies (same content-addressed layout, keyed by ``data_id`` and the training config)."""
    spec, schedule = config.model, config.expert.warmup(config.seed, index)
    if spec.kind != "convnet":
        return cached_classifier(Path(work_dir), data_id, inputs, labels, n_classes,
                                 spec.proxy_spec(), schedule)
    return _cached_convnet(Path(work_dir), data_id, inputs, labels, n_classes,
                           spec.for_inputs(inputs.shape[1]), schedule)


def _cached_convnet(work_dir: Path, data_id: str, inputs: np.ndarray, labels: np.ndarray,
                    n_classes: int, spec: StudentSpec, schedule: WarmupConfig) -> Proxy:
    key = config_hash({"pool_id": data_id, "n_classes": n_classes, "proxy": asdict(spec),
                       "warmup": asdict(schedule)})
    directory = work_dir / "proxies" / key
    if (directory / "proxy.json").exists():
        return load_expert(directory)
    # ``warmup`` builds, trains and saves any spec with ``build(in_dim, n_classes, seed)``.
    return warmup(inputs, labels, n_classes, directory, spec, schedule)  # type: ignore[arg-type]


def load_expert(directory: str | Path) -> Proxy:
    """Open an expert of any student kind (checkpoints verified by sha256)."""
    record, checkpoints = read_proxy_record(directory)
    return Proxy(StudentSpec(**record["spec"]), record["in_dim"], record["n_classes"],  # type: ignore[arg-type]
                 checkpoints, tuple(record["betas"]), record["eps"])


def trajectory(expert: Proxy) -> list[Params]:
    """Expert parameters per epoch, index = epoch (0 is the initialization)."""
    epochs = [c.epoch for c in expert.checkpoints]
    if epochs != list(range(len(epochs))):
        raise CurationError(f"expert {expert.checkpoints[0].model_path.parent} lacks per-epoch "
                            f"checkpoints from epoch 0 (has {epochs})")
    return [load_file(c.model_path) for c in expert.checkpoints]


def checkpoint_at(expert: Proxy, epoch: int) -> Checkpoint:
    """The expert's checkpoint at ``epoch``."""
    for checkpoint in expert.checkpoints:
        if checkpoint.epoch == epoch:
            return checkpoint
    raise CurationError(f"epoch {epoch} is beyond the expert trajectory "
                        f"(epochs {[c.epoch for c in expert.checkpoints]})")
