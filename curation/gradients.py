"""Per-example gradient features of a proxy: plain gradients and Adam update directions.

The datastore projects them to a few dimensions with ``curation.projectors``.

Gradients
    ``torch.func``: ``vmap`` over ``grad`` of a one-example loss, in batches; never a Python
    loop over examples. A batch comes out as one (batch, numel) block per parameter, and the
    projectors (``curation.projectors``) read the blocks in place: concatenating them first
    copied every gradient and took more than half of the gradient time.

Which parameters (``params``)
    ``all`` (the default), ``last`` (the output layer) or explicit names. The default is
    ``all`` because every proxy here is already a head: a linear layer over frozen sentence
    embeddings (the encoder is not part of the proxy, so its gradients are never computed) or
    a one-hidden-layer MLP over raw features (about 10k parameters for 64 features, 128 hidden
    units and 10 classes). ``last`` drops the hidden layer of an MLP proxy: fewer parameters
    and a faster projection, but the features then ignore what the hidden layer learns.

Feature kinds
    ``sgd`` (the plain gradient) and ``adam`` (the Adam update direction from the
    checkpoint's moments, as LESS computes it for training examples; no bias correction, as in
    LESS). Plain gradients are the default for pursuit: Adam directions share the momentum term
    and are nearly collinear across examples (mean pairwise cosine 0.7-0.85 against 0.01-0.03
    for plain gradients on 20 Newsgroups, docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from curation.proxies.classifier import classification_loss

FEATURE_KINDS = ("sgd", "adam")


ExampleLoss = Callable[[Any, torch.Tensor], torch.Tensor]


def per_example_gradient_blocks(model: nn.Module, names: Sequence[str], x: torch.Tensor,
                                y: torch.Tensor, example_loss: ExampleLoss = classification_loss
                                ) -> list[torch.Tensor]:
    """Per-example gradients of each example's loss, one (batch, numel) block per parameter in
    ``names`` order; projectors take the blocks as they are.

    ``example_loss(output, target)`` gets the model's output for one example (a batch of one)
    and that example's target: cross-entropy for classifiers, next-token loss for a causal LM.
    """
    params = {n: p.detach() for n, p in model.named_parameters()}
    recorded = {n: params[n] for n in names}
    frozen = {n: p for n, p in params.items() if n not in recorded}
    buffers = dict(model.named_buffers())

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**frozen, **p, **buffers}, (xi.unsqueeze(0),))
        return example_loss(out, yi)

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(recorded, x, y)
    # Contiguous per parameter, so these reshapes are views: concatenating them into one
    # (batch, n_params) matrix would copy every gradient and took over half the time.
    return [grads[n].reshape(len(x), -1) for n in names]


def per_example_gradients(model: nn.Module, names: Sequence[str], x: torch.Tensor,
                          y: torch.Tensor, example_loss: ExampleLoss = classification_loss
                          ) -> torch.Tensor:
    """(batch, n_params) gradients of each example's loss, ``names`` in order."""
    return torch.cat(per_example_gradient_blocks(model, names, x, y, example_loss), dim=1)


def adam_features(grads: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                  betas: tuple[float, float], eps: float) -> torch.Tensor:
    """The Adam update direction each example would cause from the checkpoint's moments."""
    beta1, beta2 = betas
    m = beta1 * exp_avg + (1 - beta1) * grads
    v = beta2 * exp_avg_sq + (1 - beta2) * grads.square()
    return m / torch.sqrt(v + eps)
