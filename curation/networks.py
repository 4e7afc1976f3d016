"""Image networks over flat feature rows, and the image shape of a pool.

``ConvNet`` is the small convolutional network the dataset-distillation literature trains
(blocks of 3x3 convolution, instance norm, ReLU and 2x2 average pooling, then one linear
layer), sized here for a CPU. It takes the pool's flat ``features`` rows and reshapes them to
images itself, so every caller (experts, students, soft labels, the unrolled steps of
trajectory matching) feeds it the same (n, d) matrix it feeds a linear model.

A pool's image shape is the ``shape`` entry of its Parquet schema metadata (a JSON list,
``[height, width]`` or ``[channels, height, width]``), or else inferred from the feature length
when it is a square (one channel) or three times a square (three channels).
"""

from __future__ import annotations

import json
import math

import torch
from torch import nn

from curation.errors import CurationError
from curation.pool import Pool

SHAPE_METADATA_KEY = b"shape"

ImageShape = tuple[int, int, int]


class ConvNet(nn.Module):
    """``depth`` blocks of conv 3x3 -> instance norm -> ReLU -> avg-pool 2x2, then a linear layer."""

    def __init__(self, shape: ImageShape, n_classes: int, width: int, depth: int) -> None:
        super().__init__()
        channels, height, width_px = shape
        if min(height, width_px) < 2 ** depth:
            raise CurationError(f"a depth-{depth} convnet halves the image {depth} times; "
                                f"{height}x{width_px} images are too small (use a smaller depth)")
        self.shape = shape
        blocks: list[nn.Module] = []
        for _ in range(depth):
            # Instance norm (affine, no running statistics): the student is a pure function of
            # its parameters, which the unrolled steps of trajectory matching differentiate.
            blocks += [nn.Conv2d(channels, width, 3, padding=1),
                       nn.InstanceNorm2d(width, affine=True), nn.ReLU(), nn.AvgPool2d(2)]
            channels, height, width_px = width, height // 2, width_px // 2
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(channels * height * width_px, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.reshape(len(x), *self.shape)
        return self.classifier(self.features(images).flatten(1))


def image_shape(length: int, declared: tuple[int, ...] | None = None, *,
                source: str = "pool") -> ImageShape:
    """(channels, height, width) of ``length``-value feature rows: ``declared`` if given, else a
    square (one channel) or three squares (RGB); a one-line error otherwise."""
    if declared is not None:
        shape = tuple(int(v) for v in declared)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or min(shape) < 1 or math.prod(shape) != length:
            raise CurationError(f"{source}: image shape {list(declared)} does not hold its "
                                f"{length} feature values (expected [height, width] or "
                                f"[channels, height, width] multiplying to {length})")
        return shape  # type: ignore[return-value]
    for channels in (1, 3):
        side = math.isqrt(length // channels)
        if length % channels == 0 and side * side * channels == length:
            return (channels, side, side)
    raise CurationError(f"{source}: a convnet needs image features, but {length} values per row "
                        f"are not a square image; declare the shape (Parquet schema metadata "
                        f"'shape', e.g. [3, 32, 32]) or use a linear or mlp model")


def declared_shape(pool: Pool) -> tuple[int, ...] | None:
    """The ``shape`` a pool's Parquet schema metadata declares, or None."""
    raw = (pool.table.schema.metadata or {}).get(SHAPE_METADATA_KEY)
    if raw is None:
        return None
    try:
        shape = json.loads(raw)
    except json.JSONDecodeError:
        shape = None
    if not isinstance(shape, list) or not all(isinstance(v, int) for v in shape):
        raise CurationError(f"{pool.source}: schema metadata 'shape' must be a JSON list of "
                            f"integers such as [1, 28, 28], got {raw.decode(errors='replace')!r}")
    return tuple(shape)
