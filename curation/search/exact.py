"""Backend ``exact``: every row scored exactly (faiss ``IndexFlatIP``, float32 rows in memory).

For small row sets (LESS's target examples); pursuit with ``search="exact"`` keeps its own
streamed Numba pass instead, which reads float16 stores in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from curation.search.base import SearchBackend

if TYPE_CHECKING:  # faiss (and numba, via the atoms) load only when an index is used
    import faiss

    from curation.pursuit.atoms import AtomSource


class ExactSearch(SearchBackend):
    name = "exact"
    exhaustive = True

    def make(self, src: AtomSource, train: np.ndarray, seed: int) -> faiss.Index:
        import faiss

        return faiss.IndexFlatIP(src.d)

    def build(self, src: AtomSource, *, normalize: bool = True, seed: int = 0,
              train_rows: int = 0):
        # A flat index needs no training sample.
        return super().build(src, normalize=normalize, seed=seed, train_rows=1)
