"""The search-backend API: a ``SearchBackend`` builds (or loads) a ``SearchIndex`` over the rows
of an ``AtomSource``; the index answers "which rows may have the largest inner product with this
query" with a candidate list that callers re-score exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:  # faiss (and numba, via the atoms) load only when an index is used
    from curation.pursuit.atoms import AtomSource


# Rows converted to float32 and handed to the index at a time while it is built: 16384 x
# 1024 float32 is 64 MiB, so building streams a store of any size.
BUILD_ROWS = 16384


class SearchIndex(ABC):
    """An index over ``n`` rows of width ``d``, with the rows' float32 ``norms``.

    With ``normalize`` the index holds the rows divided by their norms (zero rows stay zero),
    so its inner products are cosines up to the query's norm; without, the rows as they are.
    """

    def __init__(self, n: int, d: int, norms: np.ndarray, normalize: bool,
                 backend: str) -> None:
        self.n, self.d = int(n), int(d)
        self.norms = norms
        self.normalize = normalize
        self.backend = backend

    @abstractmethod
    def candidates(self, queries: np.ndarray, m: int) -> np.ndarray:
        """(q, c) rows, per query the rows the index ranks among the ``m`` best by inner
        product (``c >= min(m, n)``; -1 pads, a row may repeat); callers re-score them."""

    @abstractmethod
    def save(self, path: Path) -> list[Path]:
        """Write the index to ``path`` (and files named ``path`` + a suffix); the files."""

    def _save_norms(self, path: Path) -> Path:
        with open(norms_file(path), "wb") as f:
            np.save(f, self.norms)
        return norms_file(path)


def norms_file(path: Path) -> Path:
    return path.with_name(path.name + ".norms.npy")


class SearchBackend(ABC):
    """One way of finding the rows with the largest inner product with a query.

    ``exhaustive`` backends score every row exactly: pursuit then keeps its own streamed pass
    over the atoms (no index, no float32 copy of them).
    """

    name: ClassVar[str]
    exhaustive: ClassVar[bool] = False

    def params(self) -> dict:
        """What the index depends on besides the rows (recorded with a saved index)."""
        return {}

    @abstractmethod
    def build(self, src: AtomSource, *, normalize: bool = True, seed: int = 0) -> SearchIndex:
        """An index over every row of ``src`` (unit rows with ``normalize``), streamed in
        blocks of ``BUILD_ROWS``; any training on a sample drawn with ``seed``."""

    @abstractmethod
    def load(self, path: Path, normalize: bool) -> SearchIndex:
        """The index saved at ``path`` by ``SearchIndex.save``."""


def sample(src: AtomSource, rows: int, seed: int, normalize: bool) -> np.ndarray:
    """At most ``rows`` prepared rows of ``src`` drawn without replacement with ``seed``."""
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(src.n, min(src.n, rows), replace=False))
    return prepare(src.rows(picked), src.half, normalize)[0]


def prepare(block: np.ndarray, half: bool, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows as float32 (float16 given as uint16 bits read back as halves), divided by their
    norms with ``normalize``; and the norms."""
    if half and block.dtype in (np.uint16, np.float16):
        from curation.pursuit.kernels import float_rows_half

        return float_rows_half(np.ascontiguousarray(block).view(np.uint16), normalize)
    rows = np.ascontiguousarray(block, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1)
    if normalize:
        rows /= np.where(norms > 0, norms, 1.0)[:, None]
    return rows, norms.astype(np.float32)
