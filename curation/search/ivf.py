"""Backend ``faiss``: an inverted-file index with a cheap build, for stores of millions of rows.

- Coarse quantizer in a reduced space: a PCA to ``reduced_dim`` columns (trained on the sample),
  k-means there (``nlist`` ~ sqrt(n) centroids), and the lists picked by inner product in that
  space. Training and assigning cost ``reduced_dim`` instead of ``d`` per centroid.
- Rows stored as 4-bit product-quantizer codes scanned with SIMD lookups (``IndexIVFPQFastScan``,
  ``d / 8`` sub-quantizers, not on residuals): 0.5 bit per column, so 64 bytes per 1024-wide
  row, 1/32 of a float16 store; encoding costs 16 distances per sub-vector, not 256.
- A query scans ``nprobe`` lists (``nlist / 16``: about 6% of the rows).

The codes only rank rows: callers read the best candidates from the store and re-score them
exactly, so the codes' error decides which rows are looked at, never a score.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from curation.search.base import SearchBackend

if TYPE_CHECKING:  # faiss (and numba, via the atoms) load only when an index is used
    import faiss

    from curation.pursuit.atoms import AtomSource

_REDUCED_DIM = 64
_PROBE_FRACTION = 16  # nprobe = nlist / this
_KMEANS_ITER = 20


class IVFSearch(SearchBackend):
    name = "faiss"

    def params(self) -> dict:
        return {"reduced_dim": _REDUCED_DIM, "probe_fraction": _PROBE_FRACTION,
                "kmeans_iter": _KMEANS_ITER, "codes": "pq4-fastscan"}

    def make(self, src: AtomSource, train: np.ndarray, seed: int) -> faiss.Index:
        import faiss

        d = src.d
        # At least 39 training rows per centroid (faiss's own minimum for a stable k-means).
        nlist = max(1, min(round(math.sqrt(src.n)), len(train) // 39))
        reduced = min(_REDUCED_DIM, d)
        pca = faiss.PCAMatrix(d, reduced)
        pca.train(train)
        kmeans = faiss.Kmeans(reduced, nlist, niter=_KMEANS_ITER, seed=seed, verbose=False)
        kmeans.train(pca.apply(train))
        centroids = faiss.IndexFlatIP(reduced)
        centroids.add(kmeans.centroids)
        quantizer = faiss.IndexPreTransform(pca, centroids)
        index = faiss.IndexIVFPQFastScan(quantizer, d, nlist, _subquantizers(d), 4,
                                         faiss.METRIC_INNER_PRODUCT)
        index.by_residual = False
        index.own_fields = True  # the index frees its quantizer (and saves it)
        quantizer.this.disown()
        index.train(train)  # the product quantizer only: the quantizer holds nlist centroids
        self.configure(index)
        return index

    def configure(self, index: faiss.Index) -> None:
        import faiss

        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = max(1, ivf.nlist // _PROBE_FRACTION)


def _subquantizers(d: int) -> int:
    """The most sub-quantizers of at least 8 columns each that divide ``d`` (1 if none)."""
    return max([m for m in range(1, d // 8 + 1) if d % m == 0], default=1)
