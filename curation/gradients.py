"""Per-example gradient features of a proxy, randomly projected.

- Gradients: ``torch.func`` (``vmap`` over ``grad`` of a one-example loss), in batches; never a
  Python loop over examples.
- Feature kinds: ``sgd`` (the plain gradient) and ``adam`` (the Adam update direction from the
  checkpoint's moments, as LESS computes it for training examples; no bias correction, as in
  LESS). Plain gradients are the default for pursuit: Adam directions share the momentum term
  and are nearly collinear across examples (DESIGN.md, measured findings).
- Projection: seeded Gaussian random projection to ``dim`` dimensions, scaled by
  ``1/sqrt(dim)`` so inner products are preserved in expectation (Johnson-Lindenstrauss). The
  matrix is generated in row blocks of the parameter dimension from derived seeds
  (``seed * 1_000_003 + block``), so any block is reproducible alone and the full matrix need
  not be held when the parameter count is large.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from curation.errors import CurationError

FEATURE_KINDS = ("sgd", "adam")


def per_example_gradients(model: nn.Module, names: Sequence[str], x: torch.Tensor,
                          y: torch.Tensor) -> torch.Tensor:
    """(batch, n_params) flattened gradients of each example's cross-entropy loss."""
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    buffers = dict(model.named_buffers())

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**frozen, **p, **buffers}, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([grads[n].reshape(len(x), -1) for n in names], dim=1)


def adam_features(grads: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                  betas: tuple[float, float], eps: float) -> torch.Tensor:
    """The Adam update direction each example would cause from the checkpoint's moments."""
    beta1, beta2 = betas
    m = beta1 * exp_avg + (1 - beta1) * grads
    v = beta2 * exp_avg_sq + (1 - beta2) * grads.square()
    return m / torch.sqrt(v + eps)


class GaussianProjector:
    """Seeded blockwise Gaussian projection from ``in_dim`` to ``out_dim`` dimensions."""

    def __init__(self, in_dim: int, out_dim: int, seed: int = 0, block_rows: int = 8192,
                 cache_bytes: int = 256 << 20) -> None:
        if out_dim <= 0:
            raise CurationError(f"projection 'dim' must be positive, got {out_dim}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.seed = seed
        self.block_rows = block_rows
        # Small matrices are kept after first use; large ones are regenerated block by block.
        self._keep = in_dim * out_dim * 4 <= cache_bytes
        self._blocks: dict[int, torch.Tensor] = {}

    def block(self, index: int) -> torch.Tensor:
        if index in self._blocks:
            return self._blocks[index]
        start = index * self.block_rows
        rows = min(self.block_rows, self.in_dim - start)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        matrix = torch.randn(rows, self.out_dim, generator=generator) / np.sqrt(self.out_dim)
        if self._keep:
            self._blocks[index] = matrix
        return matrix

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != self.in_dim:
            raise CurationError(
                f"projector expects {self.in_dim} input dims, got {features.shape[1]}"
            )
        out = torch.zeros(features.shape[0], self.out_dim, dtype=torch.float32)
        for index, start in enumerate(range(0, self.in_dim, self.block_rows)):
            out += features[:, start:start + self.block_rows] @ self.block(index)
        return out

    def describe(self) -> dict:
        return {"kind": "gaussian", "seed": self.seed, "block_rows": self.block_rows,
                "seed_scheme": "seed * 1_000_003 + block", "scale": "1/sqrt(dim)"}
