"""The student (and expert) model of a distilled set, and how fresh students are trained on it.

``linear`` and ``mlp`` students are the classifier heads of ``curation.proxies.classifier``,
trained by ``curation.evaluate``'s full-batch L-BFGS (convex for ``linear``: the same optimum
whatever the step budget). ``convnet`` students (``curation.networks.ConvNet``) are trained as
the distillation literature trains them: from random init, a fixed number of Adam minibatch
steps (``StudentTraining``) of soft cross-entropy, with ``curation.training.train``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch
from pydantic import Field
from torch import nn

from curation.config import choice, config, default_of
from curation.evaluate import EvalConfig, EvalResult, accuracy, evaluate_subset, soft_cross_entropy
from curation.networks import ConvNet, image_shape
from curation.proxies.classifier import CLASSIFIER_KINDS, ProxySpec
from curation.training import init_seed, train

STUDENT_KINDS = (*CLASSIFIER_KINDS, "convnet")


@config("student")
class StudentSpec:
    """Architecture of the experts and students: a classifier head, or a small ConvNet."""

    kind: choice(STUDENT_KINDS) = Field(default="linear", description=(
        "linear (softmax regression), mlp (one hidden layer) or convnet (conv / instance norm / "
        "ReLU / avg-pool blocks over image features)."))
    hidden: int = Field(default=default_of(ProxySpec, "hidden"), gt=0,
                        description="Hidden units of the mlp.")
    width: int = Field(default=16, gt=0, description="Channels of each convnet block.")
    depth: int = Field(default=2, ge=1, le=6, description="Convnet blocks (each halves the image).")
    shape: tuple[int, int, int] | None = Field(default=None, description=(
        "Image (channels, height, width) of the convnet; None: from the pool."))

    def build(self, in_dim: int, n_classes: int, seed: int = 0) -> nn.Module:
        if self.kind != "convnet":
            return self.proxy_spec().build(in_dim, n_classes, seed)
        init_seed(seed)
        return ConvNet(self.shape or image_shape(in_dim), n_classes, self.width, self.depth)

    def proxy_spec(self) -> ProxySpec:
        """The classifier head of a linear or mlp student (its cache keys and trainer)."""
        return ProxySpec(self.kind, hidden=self.hidden)

    def for_inputs(self, in_dim: int, declared: tuple[int, ...] | None = None,
                   source: str = "pool") -> StudentSpec:
        """This spec with the convnet's image shape fixed for ``in_dim``-value inputs."""
        if self.kind != "convnet":
            return self
        return replace(self, shape=image_shape(in_dim, declared or self.shape, source=source))


@config("student training")
class StudentTraining:
    """Fresh convnet students: Adam minibatch steps from random init on the distilled set."""

    steps: int = Field(default=300, ge=1, description="Adam steps of a convnet student (at least).")
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate of convnet students.")
    batch_size: int = Field(default=256, ge=1, description="Minibatch size of convnet students.")
    weight_decay: float = Field(default=5e-4, ge=0, description="Adam weight decay of students.")


def fit_student(x: np.ndarray, targets: np.ndarray, n_classes: int, spec: StudentSpec,
                training: StudentTraining, seed: int,
                init: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """A convnet student trained on (x, soft targets), from random init or from ``init``."""
    model = spec.build(x.shape[1], n_classes, seed=seed)
    if init is not None:
        model.load_state_dict(init)
    xt = torch.from_numpy(np.array(x, dtype=np.float32))
    qt = torch.from_numpy(np.array(targets, dtype=np.float32))
    batch_size = min(training.batch_size, len(xt))
    epochs = math.ceil(training.steps / math.ceil(len(xt) / batch_size))
    model.train()
    train(model, model.parameters(), lambda rows: soft_cross_entropy(model(xt[rows]), qt[rows]).mean(),
          len(xt), batch_size=batch_size, epochs=epochs, seed=seed, lr=training.lr,
          weight_decay=training.weight_decay)
    return model.eval()


def evaluate_students(x: np.ndarray, targets: np.ndarray, test_x: np.ndarray,
                      test_y: np.ndarray, n_classes: int, spec: StudentSpec,
                      training: StudentTraining, seeds: Sequence[int]) -> EvalResult:
    """Test accuracy of fresh students trained on (x, targets), one per seed; ``targets`` are
    class indices or soft labels (n, classes)."""
    if spec.kind != "convnet":
        return evaluate_subset(x, targets, test_x, test_y, n_classes,
                               EvalConfig(spec.proxy_spec(), seeds=tuple(seeds)))
    targets = np.asarray(targets)
    if targets.ndim == 1:
        targets = np.eye(n_classes, dtype=np.float32)[targets]
    return EvalResult([accuracy(fit_student(x, targets, n_classes, spec, training, s), test_x, test_y)
                       for s in seeds], len(x))
