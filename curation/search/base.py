"""The search-backend API: a ``SearchBackend`` builds (or loads) a ``SearchIndex`` over the rows
of an ``AtomSource``; the index answers "which rows have the largest inner product with this
query".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:  # faiss (and numba, via the atoms) load only when an index is used
    import faiss

    from curation.pursuit.atoms import AtomSource


# Rows converted to float32 and handed to faiss at a time while an index is built: 16384 x
# 1024 float32 is 64 MiB, so building streams a store of any size.
BUILD_ROWS = 16384


class SearchIndex:
    """A faiss index over ``n`` rows of width ``d`` and the rows' float32 norms.

    With ``normalize`` the index holds the rows divided by their norms (zero rows stay zero),
    so its inner products are cosines up to the query's norm; without, the rows as they are.
    """

    def __init__(self, index: faiss.Index, norms: np.ndarray, normalize: bool,
                 backend: str) -> None:
        self.index = index
        self.norms = norms
        self.normalize = normalize
        self.backend = backend

    @property
    def n(self) -> int:
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(inner products, rows), each (q, m): the ``m`` rows with the largest inner product
        with each query, best first; rows are -1 where fewer than ``m`` were found."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        return self.index.search(queries, min(int(m), self.n))

    def save(self, path: Path) -> list[Path]:
        """Write the index to ``path`` and the norms beside it; the files written."""
        import faiss

        faiss.write_index(self.index, str(path))
        norms_path = norms_file(path)
        with open(norms_path, "wb") as f:
            np.save(f, self.norms)
        return [path, norms_path]


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
    def make(self, src: AtomSource, train: np.ndarray, seed: int) -> faiss.Index:
        """An empty, trained faiss index for rows like ``train`` (float32, prepared rows)."""

    def build(self, src: AtomSource, *, normalize: bool = True, seed: int = 0,
              train_rows: int = 32768) -> SearchIndex:
        """Index every row of ``src`` (prepared: unit rows with ``normalize``), streamed in
        blocks; the index is trained on at most ``train_rows`` rows drawn with ``seed``."""
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(src.n, min(src.n, train_rows), replace=False))
        train, _ = prepare(src.rows(sample), src.half, normalize)
        index = self.make(src, train, seed)
        del train
        norms = np.empty(src.n, np.float32)
        for start, block in src.blocks(BUILD_ROWS):
            rows, block_norms = prepare(block, src.half, normalize)
            norms[start:start + len(rows)] = block_norms
            index.add(rows)
        return SearchIndex(index, norms, normalize, self.name)

    def load(self, path: Path, normalize: bool) -> SearchIndex:
        """The index saved at ``path`` by ``SearchIndex.save``."""
        import faiss

        index = faiss.read_index(str(path))
        self.configure(index)
        return SearchIndex(index, np.load(norms_file(path)), normalize, self.name)

    def configure(self, index: faiss.Index) -> None:  # noqa: B027 - an optional hook
        """Set search-time parameters (not saved with the index) on a loaded index."""


def prepare(block: np.ndarray, half: bool, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows as float32 (float16 given as uint16 bits read back as halves), divided by their
    norms with ``normalize``; and the norms."""
    if half and block.dtype == np.uint16:
        block = block.view(np.float16)
    rows = np.ascontiguousarray(block, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1)
    if normalize:
        rows /= np.where(norms > 0, norms, 1.0)[:, None]
    return rows, norms.astype(np.float32)
