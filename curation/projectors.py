"""Seeded random projections of per-example gradient features to a few dimensions.

A projector maps (rows, in_dim) float32 features to (rows, out_dim). Input may be one tensor or
a sequence of column blocks (``curation.gradients`` gives one block per parameter) that side by
side are the input; blocks are read in place, never concatenated.

Implementations (``make_projector(kind, ...)``, ``kind`` as a datastore's ``projection``), both
seeded, both scaled so inner products are preserved in expectation (Johnson-Lindenstrauss):

- ``srht`` (default): subsampled randomized Hadamard transform, ``y = S H D x / sqrt(dim)``
  with ``D`` random signs, ``H`` the Walsh-Hadamard transform of the input zero-padded to a
  power of two ``p2 >= max(n_params, dim)``, and ``S`` keeping ``dim`` of the ``p2``
  coordinates (sampled without replacement). ``O(p2 log p2)`` work per example instead of
  ``O(n_params * dim)``, and no matrix at all: memory is ``p2`` signs plus one
  ``(p2, 8)`` float32 work buffer per thread. The transform is a Numba kernel of additions and
  subtractions in a fixed order, so its output does not depend on the thread count. Use it
  unless you need a dense Gaussian sketch.
- ``gaussian``: dense Gaussian matrix scaled by ``1/sqrt(dim)``, generated in row blocks of
  the parameter dimension from derived seeds (``seed * 1_000_003 + block``), so any block is
  reproducible alone. Blocks are kept when the whole matrix fits in ``cache_bytes`` (256 MiB)
  and regenerated for every call otherwise, so the full matrix is never held when the
  parameter count is large (regeneration then costs about as much as the product itself).
  ``O(n_params * dim)`` work per example: use it where a dense Gaussian sketch is wanted.

Measured distortion (``benchmarks/bench_gradients.py``, ``projection_distortion``): the 1,797
per-example SGD gradients of an MLP proxy (64 -> 128 -> 10, 9,610 parameters) warmed up on
scikit-learn's 8x8 digits, each scaled to unit norm; absolute errors of the inner products of
all 1,613,706 pairs and relative errors of the norms after projection (seed 1):

====  ================  =========  ==========  ========
dim   projector         inner max  inner mean  norm max
====  ================  =========  ==========  ========
256   srht              0.283      0.056       0.141
256   gaussian          0.320      0.051       0.143
256   dense Rademacher  0.280      0.049       0.123
512   srht              0.196      0.034       0.081
512   gaussian          0.199      0.036       0.092
512   dense Rademacher  0.222      0.036       0.113
1024  srht              0.124      0.024       0.069
1024  gaussian          0.165      0.030       0.076
1024  dense Rademacher  0.173      0.028       0.086
====  ================  =========  ==========  ========

The mean error is close to ``sqrt(2 / (pi * dim))`` (0.050, 0.035, 0.025), the JL rate for
nearly orthogonal pairs, and the largest of the 1.6M errors is 5 to 6.5 times the mean. The three
projectors are equally accurate; ``dense Rademacher`` is the baseline of the benchmark (TRAK's
CPU projector), not an option here.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import numba
import numpy as np
import torch
from numba import prange

from curation.errors import CurationError

Features = torch.Tensor | Sequence[torch.Tensor]


class Projector(Protocol):
    """Maps (rows, in_dim) float32 features to (rows, out_dim).

    Features are one tensor or a sequence of column blocks (e.g. one per parameter) that
    together are the (rows, in_dim) input; blocks are read in place, never concatenated.
    """

    in_dim: int
    out_dim: int
    seed: int

    def __call__(self, features: Features) -> torch.Tensor: ...

    def describe(self) -> dict: ...


class GaussianProjector:
    """Seeded blockwise Gaussian projection from ``in_dim`` to ``out_dim`` dimensions."""

    def __init__(self, in_dim: int, out_dim: int, seed: int = 0, block_rows: int = 8192,
                 cache_bytes: int = 256 << 20) -> None:
        _check_dims(in_dim, out_dim)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.seed = seed
        self.block_rows = block_rows
        # Small matrices are kept after first use; large ones are regenerated block by block.
        self._keep = in_dim * out_dim * 4 <= cache_bytes
        self._blocks: dict[int, torch.Tensor] = {}

    def block(self, index: int) -> torch.Tensor:
        """Rows ``index * block_rows ...`` of the matrix, from seed ``seed * 1_000_003 + index``."""
        if index in self._blocks:
            return self._blocks[index]
        start = index * self.block_rows
        rows = min(self.block_rows, self.in_dim - start)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        matrix = torch.randn(rows, self.out_dim, generator=generator) / np.sqrt(self.out_dim)
        if self._keep:
            self._blocks[index] = matrix
        return matrix

    def __call__(self, features: Features) -> torch.Tensor:
        blocks = _column_blocks(features, self.in_dim)
        out = torch.zeros(blocks[0].shape[0], self.out_dim, dtype=torch.float32)
        offsets = np.cumsum([0] + [b.shape[1] for b in blocks])
        # Matrix blocks outside, feature blocks inside: each matrix block is generated once.
        for index, start in enumerate(range(0, self.in_dim, self.block_rows)):
            stop = min(start + self.block_rows, self.in_dim)
            matrix = None
            for block, lo, hi in zip(blocks, offsets[:-1], offsets[1:], strict=True):
                a, b = max(start, lo), min(stop, hi)
                if a < b:
                    matrix = self.block(index) if matrix is None else matrix
                    out += block[:, a - lo:b - lo] @ matrix[a - start:b - start]
        return out

    def describe(self) -> dict:
        return {"kind": "gaussian", "seed": self.seed, "block_rows": self.block_rows,
                "seed_scheme": "seed * 1_000_003 + block", "scale": "1/sqrt(dim)"}


# Numba's parallel regions take tuples of at most 100 arrays (and compile once per length): a
# LoRA model of 30 layers has 120 adapter matrices.
_MAX_BLOCKS = 32


def _at_most(blocks: tuple, limit: int) -> tuple:
    """``blocks`` merged side by side into at most ``limit`` groups (the same columns)."""
    if len(blocks) <= limit:
        return blocks
    step = -(-len(blocks) // limit)
    return tuple(np.ascontiguousarray(np.concatenate(blocks[i:i + step], axis=1))
                 for i in range(0, len(blocks), step))


class HadamardProjector:
    """Seeded subsampled randomized Hadamard transform from ``in_dim`` to ``out_dim`` dims."""

    def __init__(self, in_dim: int, out_dim: int, seed: int = 0) -> None:
        _check_dims(in_dim, out_dim)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.seed = seed
        self.padded_dim = 1 << (max(in_dim, out_dim) - 1).bit_length()
        rng = np.random.Generator(np.random.PCG64(seed))
        self.signs = rng.integers(0, 2, self.padded_dim).astype(np.float32) * 2 - 1
        # Sorted so the final gather walks the work buffer forwards.
        self.keep = np.sort(rng.choice(self.padded_dim, out_dim, replace=False)).astype(np.int64)
        self.scale = np.float32(1 / np.sqrt(out_dim))

    def __call__(self, features: Features) -> torch.Tensor:
        blocks = _at_most(tuple(np.ascontiguousarray(b.detach().numpy(), dtype=np.float32)
                                for b in _column_blocks(features, self.in_dim)), _MAX_BLOCKS)
        out = np.empty((blocks[0].shape[0], self.out_dim), dtype=np.float32)
        # Numba's default "workqueue" threading layer aborts on concurrent parallel calls
        # (Dask worker threads); one kernel at a time per process already uses every core.
        with _KERNEL_LOCK:
            _srht_kernel(blocks, self.signs, self.keep, self.scale, out)
        return torch.from_numpy(out)

    def describe(self) -> dict:
        return {"kind": "srht", "seed": self.seed, "padded_dim": self.padded_dim,
                "seed_scheme": "numpy PCG64(seed): padded_dim signs, then dim coordinates "
                               "without replacement (sorted)",
                "scale": "1/sqrt(dim)"}


PROJECTORS: dict[str, type] = {"srht": HadamardProjector, "gaussian": GaussianProjector}


def make_projector(kind: str, in_dim: int, out_dim: int, seed: int = 0) -> Projector:
    """The projector registered as ``kind`` (see the module docstring for which to use)."""
    if kind not in PROJECTORS:
        raise CurationError(f"projection must be one of {tuple(PROJECTORS)}, got {kind!r}")
    return PROJECTORS[kind](in_dim, out_dim, seed=seed)


def projection_distortion(x: np.ndarray, projected: np.ndarray) -> dict[str, float]:
    """Johnson-Lindenstrauss distortion of a projection of the rows of ``x``.

    Rows are scaled to unit norm (each projected row by the same factor), then: errors of the
    inner products over all pairs of distinct rows, and relative errors of the norms.

    >>> x = np.eye(3, 4)
    >>> d = projection_distortion(x, 2 * x)
    >>> d["inner_max"], d["norm_max"]
    (0.0, 1.0)
    """
    x = np.asarray(x, dtype=np.float64)
    projected = np.asarray(projected, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    unit, unit_projected = x / norms, projected / norms
    pairs = np.triu_indices(len(x), k=1)
    errors = np.abs(unit_projected @ unit_projected.T - unit @ unit.T)[pairs]
    norm_errors = np.abs(np.linalg.norm(unit_projected, axis=1) - 1)
    return {"inner_max": float(errors.max(initial=0.0)), "inner_mean": float(errors.mean())
            if errors.size else 0.0, "norm_max": float(norm_errors.max()),
            "norm_mean": float(norm_errors.mean())}


def _check_dims(in_dim: int, out_dim: int) -> None:
    if out_dim <= 0:
        raise CurationError(f"projection 'dim' must be positive, got {out_dim}")
    if in_dim <= 0:
        raise CurationError(f"projection input must have positive size, got {in_dim}")


def _column_blocks(features: Features, in_dim: int) -> list[torch.Tensor]:
    blocks = [features] if isinstance(features, torch.Tensor) else list(features)
    shapes = [tuple(b.shape) for b in blocks]
    if (not blocks or any(len(s) != 2 or s[0] != shapes[0][0] for s in shapes)
            or sum(s[1] for s in shapes) != in_dim):
        raise CurationError(f"projector expects (rows, {in_dim}) input, got column blocks {shapes}")
    return blocks


_KERNEL_LOCK = threading.Lock()
# Examples transformed together: their values at one coordinate sit side by side, so every
# butterfly is one 8-lane float32 vector operation.
_TILE = 8
# Butterfly passes whose span is below this many coordinates run block by block while the
# block (coordinates x _TILE lanes x 4 bytes = 16 KiB) stays in L1 cache.
_L1_SPAN = 512


@numba.njit(cache=True, inline="always")
def _butterflies(buf: np.ndarray, lo: int, hi: int, h_from: int, h_to: int) -> None:
    h = h_from
    while h < h_to:
        for i in range(lo, hi, 2 * h):
            for j in range(i, i + h):
                for lane in range(buf.shape[1]):
                    a = buf[j, lane]
                    b = buf[j + h, lane]
                    buf[j, lane] = a + b
                    buf[j + h, lane] = a - b
        h *= 2


def _srht(blocks: tuple, signs: np.ndarray, keep: np.ndarray, scale: np.float32,
          out: np.ndarray) -> None:
    """out = (H D x_padded)[keep] * scale for every row of x = the column blocks side by side,
    in tiles of _TILE rows."""
    rows = out.shape[0]
    padded = signs.shape[0]
    span = min(padded, _L1_SPAN)
    for tile in prange((rows + _TILE - 1) // _TILE):
        first = tile * _TILE
        count = min(_TILE, rows - first)
        buf = np.zeros((padded, _TILE), dtype=np.float32)
        offset = 0
        for block in blocks:
            for lane in range(count):
                for i in range(block.shape[1]):
                    buf[offset + i, lane] = block[first + lane, i] * signs[offset + i]
            offset += block.shape[1]
        for lo in range(0, padded, span):
            _butterflies(buf, lo, lo + span, 1, span)
        _butterflies(buf, 0, padded, span, padded)
        for lane in range(count):
            for k in range(keep.shape[0]):
                out[first + lane, k] = buf[keep[k], lane] * scale


# One body, two compilations: tiles are independent, so both give the same bits. Small inputs
# run serially because a parallel region's fork/join costs milliseconds on busy cores.
_srht_serial = numba.njit(cache=True)(_srht)
_srht_parallel = numba.njit(cache=True, parallel=True)(_srht)
_PARALLEL_MIN_SIZE = 1 << 20


def _srht_kernel(blocks: tuple, signs: np.ndarray, keep: np.ndarray, scale: np.float32,
                 out: np.ndarray) -> None:
    parallel = out.shape[0] * signs.shape[0] >= _PARALLEL_MIN_SIZE
    (_srht_parallel if parallel else _srht_serial)(blocks, signs, keep, scale, out)
