"""Trajectory matching (Cazenavette et al. 2022): synthetic inputs (and soft labels, and the
student's step size) learned so that a student started at expert checkpoint ``t`` and trained
``syn_steps`` unrolled steps on them lands near checkpoint ``t + expert_epochs``.

The unrolled steps are plain SGD at a learned step size (``optimizer="sgd"``), or the Adam
steps fresh convnet students take when the set is evaluated (``optimizer="adam"``: their lr,
weight decay and zero initial moments). A set learned for SGD students at its own step size
does not carry over to Adam students (measured in ``benchmarks/DISTILL.md``).

The loss is the normalized parameter distance
``|theta_student - theta_{t+M}|^2 / |theta_t - theta_{t+M}|^2``, differentiated through the
unrolled steps with ``torch.func``; any student of ``StudentSpec`` (the convnet included: it
takes flat rows and has no running statistics) is a pure function of its parameters here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad
from tqdm.auto import tqdm

from curation.distill.config import MatchingConfig
from curation.distill.students import StudentSpec, StudentTraining
from curation.evaluate import soft_cross_entropy
from curation.training import numpy_rng

Params = dict[str, torch.Tensor]


# torch.optim.Adam's defaults, which ``curation.training.train`` (the students' trainer) uses.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def matching_loss(model: nn.Module, start: Params, target: Params, inputs: torch.Tensor,
                  targets: torch.Tensor, lr: torch.Tensor, syn_steps: int,
                  batches: Sequence[np.ndarray] | None = None,
                  adam_weight_decay: float | None = None) -> torch.Tensor:
    """Normalized distance to ``target`` after ``syn_steps`` steps from ``start`` on (inputs,
    soft targets): SGD steps, or with ``adam_weight_decay`` set, Adam steps (that L2 weight
    decay, zero initial moments) as ``torch.optim.Adam`` takes them; differentiable in inputs,
    targets and lr."""

    def loss(params: Params, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(functional_call(model, params, (x,)), q).mean()

    step_grad = grad(loss)
    params = dict(start)
    first = {k: torch.zeros_like(p) for k, p in params.items()}
    second = {k: torch.zeros_like(p) for k, p in params.items()}
    beta1, beta2 = ADAM_BETAS
    for step in range(syn_steps):
        rows = slice(None) if batches is None else torch.from_numpy(batches[step])
        gradients = step_grad(params, inputs[rows], targets[rows])
        if adam_weight_decay is None:
            params = {k: p - lr * gradients[k] for k, p in params.items()}
            continue
        for k, p in params.items():
            g = gradients[k] + adam_weight_decay * p
            first[k] = beta1 * first[k] + (1 - beta1) * g
            second[k] = beta2 * second[k] + (1 - beta2) * g * g
        t = step + 1
        # sqrt(v + eps^2) rather than sqrt(v): the same step to float precision, but a finite
        # derivative where a gradient entry is exactly zero (sqrt'(0) is infinite).
        params = {k: p - lr * (first[k] / (1 - beta1 ** t)) / (
            torch.sqrt(second[k] / (1 - beta2 ** t) + ADAM_EPS ** 2) + ADAM_EPS)
            for k, p in params.items()}
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
                       trajectories: Sequence[Sequence[Params]], spec: StudentSpec,
                       config: MatchingConfig, learn_labels: bool, seed: int = 0,
                       progress: bool = False,
                       training: StudentTraining = StudentTraining()  # noqa: B008 - frozen
                       ) -> MatchResult:
    """Learn synthetic inputs (and labels, lr) so that students follow the expert trajectories.

    Each iteration draws an expert, a start epoch ``t`` and (optionally) minibatches, and takes
    one Adam step on the matching loss. With ``optimizer="sgd"`` the student learning rate
    starts where ``syn_steps`` plain gradient steps from the initialization would cover the
    expert's first ``expert_epochs`` epochs, so it needs no hand tuning; with ``"adam"`` the
    students take ``training``'s Adam steps (its lr, not learned, and weight decay).
    """
    # The unrolled ops are tiny: extra threads only add synchronization (10x slower measured
    # on two busy cores), so matching runs single-threaded and restores the setting after.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _match(inputs, soft_labels, trajectories, spec, config, learn_labels, seed,
                      progress, training)
    finally:
        torch.set_num_threads(threads)


def _match(inputs: np.ndarray, soft_labels: np.ndarray, trajectories: Sequence[Sequence[Params]],
           spec: StudentSpec, config: MatchingConfig, learn_labels: bool, seed: int,
           progress: bool, training: StudentTraining) -> MatchResult:
    # Shares only the seeding with ``curation.training.train``: each outer Adam step is on the
    # synthetic data through an unrolled, differentiable inner loop, not on a model's minibatches.
    rng = numpy_rng(seed)
    n, n_classes = soft_labels.shape
    model = spec.build(inputs.shape[1], n_classes)
    x = torch.tensor(inputs, dtype=torch.float32, requires_grad=True)
    q = torch.tensor(soft_labels, dtype=torch.float32)
    # softmax(log q) = q, so learning starts from the given labels.
    label_logits = torch.log(q.clamp_min(1e-8)).requires_grad_(learn_labels)
    adam = config.optimizer == "adam"
    first = trajectories[0]
    initial_lr = training.lr if adam else _initial_lr(
        model, first[0], first[config.expert_epochs], x.detach(), q, config.syn_steps)
    learn_lr = config.learn_lr and not adam
    log_lr = torch.tensor(np.log(initial_lr), dtype=torch.float32, requires_grad=learn_lr)
    groups = [{"params": [x], "lr": config.lr_inputs}]
    if learn_labels:
        groups.append({"params": [label_logits], "lr": config.lr_labels})
    if learn_lr:
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
                             log_lr.exp(), config.syn_steps, batches,
                             training.weight_decay if adam else None)
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


