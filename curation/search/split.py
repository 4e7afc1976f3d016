"""Backend ``faiss``: a subspace-split index with a cheap build, for stores of millions of rows.

An inner product splits exactly over a subspace and its complement: with ``U`` the top
``SUBSPACE`` directions of the rows' second moment (an orthonormal (p, d) basis),
``<a, q> = <U a, U q> + <a - U^T U a, q - U^T U q>``. Gradients put most of their energy in
``U`` (class structure) and the rest in many weak directions (noise); once a pursuit has fitted
the structure its residual lives almost only in the complement, where the best atom is the
one whose weak part aligns with it. So the two parts are indexed apart, each at its own scale:

- the subspace coordinates ``U a`` of every row as int8, one scale per coordinate (32 bytes per
  row: scanned in 3 ms per 1M rows where float32 took 8 ms, memory-bound; the rounding, 1/254
  of a coordinate's range, only reorders near-ties, and every candidate is re-scored exactly);
- the complement ``a - U^T U a`` as 4-bit product-quantizer codes (``IndexPQFastScan``, ``d / 8``
  sub-quantizers: 64 bytes per 1024-wide row, 1/32 of a float16 store), trained on the
  complement, so its error is relative to the complement's energy, not to the whole row's. One
  code book over all rows of the whole row ranked by the structure and could not tell which
  row's weak part aligns with a residual (5.7x the exact residual at 20k x 256).

A query returns the ``m`` best rows by the codes of the complement and the best by the
subspace part (``m`` of them up to ``SUBSPACE_LIST``, an eighth of ``m`` past it); callers
re-score both lists exactly. The subspace part is near exact, so a short list of it already holds
the rows the structure decides; the rest of a long one tie in the structure and differ in the
complement, which the codes rank (1M x 1024, k = 600, m = 8,192: 24 instead of 30 s of steps,
residual 0.95 instead of 0.99 of exact's). Both scans cover every row (no
inverted lists: a residual in the complement has no structure that would pick a few lists),
at 32 + 64 bytes per row instead of a float16 store's 2048. The build trains on a seeded sample
(``TRAIN_ROWS``) and then streams the rows once: project, encode.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numba
import numpy as np

from curation.search.base import (
    BUILD_ROWS,
    SearchBackend,
    SearchIndex,
    norms_file,
    prepare,
    sample,
)

if TYPE_CHECKING:  # faiss (and numba, via the atoms) load only when an index is used
    import faiss

    from curation.pursuit.atoms import AtomSource

SUBSPACE = 32
TRAIN_ROWS = 32768
_CODE_BITS = 4  # 16 centroids per sub-quantizer: the SIMD fast-scan layout
SUBSPACE_LIST = 1024
_SCORES_PER_CHUNK = 1 << 24  # 64 MiB of float32 subspace scores per query chunk
# Up to this many queries are scored by the int8 kernel; more by BLAS over float32 row blocks.
_KERNEL_QUERIES = 4
_LOW_BLOCK = 65536


class SplitIndex(SearchIndex):
    """Subspace coordinates ``low`` (n, p) int8 in the basis ``basis`` (p, d), ``low * scale``
    (p,) in the rows' units, and product-quantizer codes ``codes`` of the complement."""

    def __init__(self, codes: faiss.Index, basis: np.ndarray, low: np.ndarray,
                 scale: np.ndarray, norms: np.ndarray, normalize: bool) -> None:
        super().__init__(codes.ntotal, codes.d, norms, normalize, SplitSearch.name)
        if low.dtype != np.int8 or low.shape != (codes.ntotal, len(basis)):
            raise ValueError(f"subspace coordinates of shape {low.shape} {low.dtype}, expected "
                             f"{(codes.ntotal, len(basis))} int8 (an index of an older format: "
                             "rebuild it)")
        self.codes, self.basis, self.low, self.scale = codes, basis, low, scale

    def candidates(self, queries: np.ndarray, m: int) -> np.ndarray:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        m = min(int(m), self.n)
        # Queries in chunks: the subspace scores of a chunk are (n, chunk) float32.
        chunk = max(1, _SCORES_PER_CHUNK // self.n)
        return np.concatenate([self._candidates(queries[i:i + chunk], m)
                               for i in range(0, len(queries), chunk)])

    def _candidates(self, queries: np.ndarray, m: int) -> np.ndarray:
        q_low = queries @ self.basis.T
        q_rest = np.ascontiguousarray(queries - q_low @ self.basis)
        found = [self.codes.search(q_rest, m)[1]]
        if len(self.basis):
            scores = self.subspace_scores(q_low)  # (n, q): the subspace part of every row
            top = min(m, max(SUBSPACE_LIST, m // 8))
            found.append(np.stack([_top_rows(col, top) for col in scores.T]))
        return np.concatenate(found, axis=1)

    def subspace_scores(self, q_low: np.ndarray) -> np.ndarray:
        """(n, q) float32 ``low * scale @ q_low.T``: the subspace part of every row's score."""
        q = np.ascontiguousarray(q_low * self.scale, dtype=np.float32)
        out = np.empty((self.n, len(q)), np.float32)
        if len(q) <= _KERNEL_QUERIES:
            _int8_scores(self.low, q, out)
            return out
        for start in range(0, self.n, _LOW_BLOCK):  # many queries: BLAS pays for the convert
            out[start:start + _LOW_BLOCK] = \
                self.low[start:start + _LOW_BLOCK].astype(np.float32) @ q.T
        return out

    def save(self, path: Path) -> list[Path]:
        import faiss

        faiss.write_index(self.codes, str(path))
        written = [path, self._save_norms(path)]
        for suffix, array in ((".basis.npy", self.basis), (".low.npy", self.low),
                              (".scale.npy", self.scale)):
            with open(path.with_name(path.name + suffix), "wb") as f:
                np.save(f, array)
            written.append(path.with_name(path.name + suffix))
        return written


class SplitSearch(SearchBackend):
    name = "faiss"

    def params(self) -> dict:
        return {"subspace": SUBSPACE, "train_rows": TRAIN_ROWS,
                "codes": f"pq{_CODE_BITS}-fastscan-complement", "subspace_coords": "int8"}

    def build(self, src: AtomSource, *, normalize: bool = True, seed: int = 0) -> SplitIndex:
        import faiss

        d = src.d
        train = sample(src, TRAIN_ROWS, seed, normalize)
        basis = _top_directions(train, min(SUBSPACE, d // 2))
        train_coords = train @ basis.T
        scale = _coord_scale(train_coords)
        rest = train - train_coords @ basis
        if len(rest) < 2 ** _CODE_BITS:  # k-means needs a row per centroid
            rest = np.resize(rest, (2 ** _CODE_BITS, d))
        codes = faiss.IndexPQFastScan(d, _subquantizers(d), _CODE_BITS,
                                      faiss.METRIC_INNER_PRODUCT)
        codes.train(rest)
        # The encoder's distance loop reads transposed centroids ~10% faster.
        codes.pq.sync_transposed_centroids()
        del train, rest, train_coords
        low = np.empty((src.n, len(basis)), np.int8)
        norms = np.empty(src.n, np.float32)
        for start, block in src.blocks(BUILD_ROWS):
            rows, norms[start:start + len(block)] = prepare(block, src.half, normalize)
            if np.shares_memory(rows, block):  # float32 rows as given: the caller's array
                rows = rows.copy()
            coords = rows @ basis.T
            low[start:start + len(block)] = _quantize(coords, scale)
            codes.add(_subtract_projection(rows, coords, basis))
        return SplitIndex(codes, basis, low, scale, norms, normalize)

    def load(self, path: Path, normalize: bool) -> SplitIndex:
        import faiss

        return SplitIndex(faiss.read_index(str(path)),
                          np.load(path.with_name(path.name + ".basis.npy")),
                          np.load(path.with_name(path.name + ".low.npy")),
                          np.load(path.with_name(path.name + ".scale.npy")),
                          np.load(norms_file(path)), normalize)


def _top_rows(scores: np.ndarray, m: int) -> np.ndarray:
    """The rows of the ``m`` largest of ``scores`` (n,), in no order (ties in any order).

    A strided sample's quantile bounds the m-th largest from below first, so the partition
    runs over about 2m rows instead of n: 0.7 ms against 5 ms for m = 8,192 of 1M rows. When
    fewer than ``m`` rows clear the bound (a sorted or tied store), all rows are partitioned.
    """
    n = len(scores)
    if m >= n:
        return np.arange(n)
    stride = max(1, min(64, m // 16))  # about 32 sampled rows or more above the bound
    if stride > 1 and 4 * m < n:
        sample = scores[::stride]
        above = min(len(sample) - 1, (2 * m) // stride)
        bound = np.partition(sample, len(sample) - 1 - above)[len(sample) - 1 - above]
        keep = np.flatnonzero(scores >= bound)
        if len(keep) >= m:
            return keep[np.argpartition(-scores[keep], m - 1)[:m]]
    return np.argpartition(-scores, m - 1)[:m]


def _coord_scale(coords: np.ndarray) -> np.ndarray:
    """(p,) float32: per coordinate, the step of an int8 grid over 1.5x the sample's largest
    magnitude (rows beyond it are clipped: ranked low by the subspace list, still found by the
    codes' list and re-scored exactly)."""
    top = np.abs(coords).max(axis=0) if len(coords) else np.zeros(coords.shape[1])
    return (np.where(top > 0, 1.5 * top, 1.0) / 127).astype(np.float32)


def _quantize(coords: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(coords / scale), -127, 127).astype(np.int8)


# Numba, not numpy: numpy has no int8 x float32 product without a float32 copy of the rows,
# which would read 4x the bytes this scan exists to save.
@numba.njit(cache=True, fastmath=True)
def _int8_scores(low, queries, out):
    """out[i, c] = <low[i], queries[c]> in float32."""
    p = low.shape[1]
    for i in range(low.shape[0]):
        for c in range(queries.shape[0]):
            acc = np.float32(0.0)
            for j in range(p):
                acc += np.float32(low[i, j]) * queries[c, j]
            out[i, c] = acc


def _subtract_projection(rows: np.ndarray, coords: np.ndarray, basis: np.ndarray
                         ) -> np.ndarray:
    """``rows - coords @ basis`` in place, as one BLAS call (``sgemm`` with beta = 1).

    numpy would allocate the product and the difference, two (rows, d) float32 temporaries
    per block: 2.4 of 12.5 s per 1M x 1024 rows, measured, most of it first-touch page faults.
    In Fortran order ``rows.T`` (d, m) is ``rows`` itself, so sgemm updates it in place.
    """
    from scipy.linalg.blas import sgemm

    if not len(basis):
        return rows
    out = sgemm(-1.0, basis.T, coords.T, beta=1.0, c=rows.T, overwrite_c=True)
    if not np.shares_memory(out, rows):  # sgemm copied (never for C-ordered float32 rows)
        rows[:] = out.T
    return rows


def _top_directions(rows: np.ndarray, p: int) -> np.ndarray:
    """(p, d) float32 orthonormal rows: the top eigenvectors of the rows' second moment
    (uncentred: inner products are taken with the origin, not with the mean)."""
    if p == 0:
        return np.zeros((0, rows.shape[1]), np.float32)
    moment = (rows.T @ rows).astype(np.float64)
    _, vectors = np.linalg.eigh(moment)  # ascending eigenvalues
    return np.ascontiguousarray(vectors[:, ::-1][:, :p].T, dtype=np.float32)


def _subquantizers(d: int) -> int:
    """The most sub-quantizers of at least 8 columns each that divide ``d`` (1 if none)."""
    return max([m for m in range(1, d // 8 + 1) if d % m == 0], default=1)
