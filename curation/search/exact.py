"""Backend ``exact``: every row scored exactly (faiss ``IndexFlatIP``, float32 rows in memory).

For small row sets; pursuit with ``search="exact"`` keeps its own streamed Numba pass instead,
which reads float16 stores in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from curation.search.base import BUILD_ROWS, SearchBackend, SearchIndex, norms_file, prepare

if TYPE_CHECKING:  # faiss (and numba, via the atoms) load only when an index is used
    import faiss

    from curation.pursuit.atoms import AtomSource


class FlatIndex(SearchIndex):
    """Every row in a faiss ``IndexFlatIP``: the candidates are the exact ``m`` best."""

    def __init__(self, index: faiss.Index, norms: np.ndarray, normalize: bool) -> None:
        super().__init__(index.ntotal, index.d, norms, normalize, ExactSearch.name)
        self.index = index

    def candidates(self, queries: np.ndarray, m: int) -> np.ndarray:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        return self.index.search(queries, min(int(m), self.n))[1]

    def save(self, path: Path) -> list[Path]:
        import faiss

        faiss.write_index(self.index, str(path))
        return [path, self._save_norms(path)]


class ExactSearch(SearchBackend):
    name = "exact"
    exhaustive = True

    def build(self, src: AtomSource, *, normalize: bool = True, seed: int = 0) -> FlatIndex:
        import faiss

        index = faiss.IndexFlatIP(src.d)
        norms = np.empty(src.n, np.float32)
        for start, block in src.blocks(BUILD_ROWS):
            rows, norms[start:start + len(block)] = prepare(block, src.half, normalize)
            index.add(rows)
        return FlatIndex(index, norms, normalize)

    def load(self, path: Path, normalize: bool) -> FlatIndex:
        import faiss

        return FlatIndex(faiss.read_index(str(path)), np.load(norms_file(path)), normalize)
