"""The one training loop: seeding, seeded minibatch order, Adam steps and checkpoint snapshots.

Every Adam minibatch loop of the project (classifier warm-up, causal-LM pre-training, warm-up
and fine-tuning) runs ``train``; the loops that differ in kind (full-batch L-BFGS in
``curation.evaluate.fit``, the unrolled inner loop of trajectory matching in ``curation.distill``)
share only the seeding helpers. The order of random draws is part of the checkpoint format:
``init_seed`` (global torch RNG, the initialization) comes first, the batch order is drawn from
its own ``torch.Generator`` seeded with the same seed (one ``randperm`` per epoch), so a change
here changes every checkpoint byte.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from curation.proxies.base import Checkpoint


def init_seed(seed: int) -> None:
    """Seed the global torch RNG, which model initialization draws from."""
    torch.manual_seed(seed)


def numpy_rng(seed: int) -> np.random.Generator:
    """The numpy generator of a seed (subset draws, sampling)."""
    return np.random.default_rng(seed)


def torch_generator(seed: int) -> torch.Generator:
    """A CPU torch generator of a seed, independent of the global RNG (batch order)."""
    return torch.Generator().manual_seed(seed)


def train(model: nn.Module, parameters: Iterable[nn.Parameter],
          loss_of_batch: Callable[[torch.Tensor], torch.Tensor], n_examples: int, *,
          batch_size: int, epochs: int, seed: int, lr: float, weight_decay: float = 0.0,
          betas: tuple[float, float] = (0.9, 0.999), out_dir: Path | None = None,
          snapshot_at: Collection[int] = (),
          snapshot_weights: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None,
          on_step: Callable[[], None] | None = None) -> list[Checkpoint]:
    """Train ``parameters`` of ``model`` with Adam for ``epochs`` epochs over ``n_examples``.

    Each epoch draws a permutation of the example indices from ``torch_generator(seed)`` and
    steps once per ``batch_size`` slice of it on ``loss_of_batch(indices)`` (CPU int64 indices).
    At the end of every epoch in ``snapshot_at`` (0: before the first step, zero moments) a
    checkpoint is written under ``out_dir`` by ``save_checkpoint``, holding
    ``snapshot_weights(model)`` (default: the whole state dict); the checkpoints are returned.
    """
    # Imported here: the proxy modules import this one, and ``curation.proxies`` imports them.
    from curation.proxies.base import save_checkpoint

    optimizer = torch.optim.Adam(parameters, lr=lr, betas=betas, weight_decay=weight_decay)
    generator = torch_generator(seed)

    def snapshot(epoch: int, step: int) -> Checkpoint:
        weights = None if snapshot_weights is None else snapshot_weights(model)
        return save_checkpoint(model, optimizer, out_dir, epoch, step, lr, weights)

    checkpoints = [snapshot(0, 0)] if 0 in snapshot_at else []
    step = 0
    for epoch in range(1, epochs + 1):
        for batch in torch.randperm(n_examples, generator=generator).split(batch_size):
            optimizer.zero_grad()
            loss_of_batch(batch).backward()
            optimizer.step()
            step += 1
            if on_step is not None:
                on_step()
        if epoch in snapshot_at:
            checkpoints.append(snapshot(epoch, step))
    return checkpoints
