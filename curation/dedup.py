"""Explicit near-duplicate removal: rows whose vectors have cosine similarity at or above a
threshold are one group, and one row per group is kept.

Vectors are L2-normalized and searched with a faiss exact inner-product index
(``IndexFlatIP.range_search``), ``batch_rows`` queries at a time, so memory beyond the index
(every vector as float32: n * d * 4 bytes) stays at one batch's matches. The search is exact
and costs n^2 * d multiply-adds: seconds for 10^4 rows, not for 10^7. Groups are the
connected components of the "near-duplicate" graph (scipy's ``connected_components``): A~B
and B~C put A, B and C in one group even when A and C are further apart. The kept row of a
group is the one with the smallest id (string order), so the result does not depend on the
pool's row order. Zero vectors have no direction and are never grouped.

What the vectors are (``on``): the pool's ``features`` column, MiniLM ``embeddings`` of its text
(``curation.embed``), a hashed TF-IDF of the ``text``'s words, or the rows of a gradient
datastore built on the pool (``gradients``, matched by id). On 20 Newsgroups with planted copies
that drop 10% of their words (``benchmarks/bench_dedup.py``) the word TF-IDF separates copies
from distinct documents far better than MiniLM, which sees only the first 128 tokens and
places distinct posts on one topic close together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation.config import choice, config
from curation.errors import CurationError
from curation.io import write_parquet
from curation.pool import Pool

DEDUP_INPUTS = ("features", "embeddings", "text", "gradients")
# Hashed word buckets of the ``text`` vectors: no vocabulary to keep, 16 KiB per row.
TEXT_DIM = 4096
# Inner products of unit float32 vectors carry rounding of a few 1e-7: a pair exactly at the
# threshold (an exact copy at threshold 1.0) must not fall out by rounding.
_ROUNDING = 1e-6


@config("dedup")
class DedupConfig:
    """How near-duplicates are found."""

    threshold: float = Field(default=0.9, gt=0, le=1, allow_inf_nan=False,
                             description="Cosine similarity at or above which two rows are "
                                         "near-duplicates (1.0: exact copies only).")
    on: choice(DEDUP_INPUTS) = Field(
        default="features", description="Vectors compared: the pool's features column, MiniLM "
        "embeddings of its text, hashed TF-IDF of its text's words (text), or a gradient "
        "datastore's rows (gradients).")
    batch_rows: int = Field(default=4096, ge=1, strict=True,
                            description="Query rows per range search (bounds the memory).")


@dataclass(frozen=True)
class Dedup:
    """Which rows to keep and the near-duplicate groups (two rows or more) they came from."""

    keep: np.ndarray  # int64 row indices kept, ascending
    kept_rows: np.ndarray  # int64 the kept row of each group, groups in order of kept id
    removed_rows: list[np.ndarray]  # int64 rows removed from each group, ascending by id

    @property
    def n_removed(self) -> int:
        return int(sum(len(r) for r in self.removed_rows))

    def groups_table(self, ids: np.ndarray) -> pa.Table:
        """``group, kept_id, removed_ids``: one row per near-duplicate group."""
        return pa.table({
            "group": pa.array(np.arange(len(self.kept_rows)), pa.int64()),
            "kept_id": pa.array([str(ids[r]) for r in self.kept_rows], pa.string()),
            "removed_ids": pa.array([[str(ids[r]) for r in rows] for rows in self.removed_rows],
                                    pa.list_(pa.string())),
        })


def near_duplicate_pairs(vectors: np.ndarray, threshold: float, batch_rows: int = 4096
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs ``(i, j)``, ``i < j``, whose cosine similarity is >= ``threshold``."""
    import faiss

    unit = _unit_rows(vectors)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    firsts, seconds = [], []
    for start in range(0, len(unit), batch_rows):
        lims, _, found = index.range_search(unit[start:start + batch_rows],
                                            float(threshold) - _ROUNDING)
        query = start + np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64)))
        later = found > query  # each pair once, and no row paired with itself
        firsts.append(query[later])
        seconds.append(found[later].astype(np.int64))
    return np.concatenate(firsts), np.concatenate(seconds)


def find_duplicates(ids: np.ndarray, vectors: np.ndarray, threshold: float,
                    batch_rows: int = 4096) -> Dedup:
    """Group the rows of ``vectors`` (one per id) at ``threshold``; keep the smallest id of each."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vectors)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} vectors")
    first, second = near_duplicate_pairs(vectors, threshold, batch_rows)
    graph = coo_matrix((np.ones(len(first), np.int8), (first, second)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # Rows ordered by (component, id): the first row of each component is its kept row.
    id_rank = np.argsort(np.argsort(np.asarray(ids, dtype=str), kind="stable"), kind="stable")
    order = np.lexsort((id_rank, component))
    starts = np.flatnonzero(np.r_[True, np.diff(component[order]) != 0])
    sizes = np.diff(np.r_[starts, n])
    keep = np.sort(order[starts])
    grouped = [order[s:s + size] for s, size in zip(starts, sizes, strict=True) if size > 1]
    grouped.sort(key=lambda rows: id_rank[rows[0]])
    return Dedup(keep=keep.astype(np.int64),
                 kept_rows=np.array([rows[0] for rows in grouped], np.int64),
                 removed_rows=[rows[1:].astype(np.int64) for rows in grouped])


def dedup_vectors(pool: Pool, on: str, *, cache_dir: str | Path | None = None,
                  store: str | Path | None = None) -> np.ndarray:
    """The (n, d) vectors of ``pool`` that ``on`` names, in the pool's row order."""
    if on == "features":
        if pool.input_column != "features":
            raise CurationError(f"{pool.source}: has no 'features' column (input is "
                                f"{pool.input_column}); compare 'text' or 'embeddings' instead")
        return pool.features
    if on == "embeddings":
        from curation.embed import embed_texts

        if pool.input_column == "features":
            raise CurationError(f"{pool.source}: has no text to embed (input is features)")
        return embed_texts(pool.texts, cache_dir=cache_dir)
    if on == "text":
        if pool.input_column == "features":
            raise CurationError(f"{pool.source}: has no text (input is features)")
        return text_vectors(pool.texts)
    if on == "gradients":
        if store is None:
            raise CurationError("dedup on gradients needs a gradient datastore built on the pool")
        return _store_rows(pool, store)
    raise CurationError(f"dedup 'on' must be one of {list(DEDUP_INPUTS)}, got {on!r}")


def text_vectors(texts: list[str], dim: int = TEXT_DIM) -> np.ndarray:
    """(n, dim) float32 TF-IDF (sublinear term frequency, IDF over ``texts``) of hashed words."""
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    counts = HashingVectorizer(n_features=dim, alternate_sign=False, norm=None).transform(texts)
    return TfidfTransformer(sublinear_tf=True).fit_transform(counts).toarray().astype(np.float32)


def write_dedup(pool: Pool, result: Dedup, out: str | Path) -> tuple[Path, Path]:
    """The kept rows of ``pool`` (all its columns) at ``out`` and the groups table beside it
    (``<out stem>.groups.parquet``), each written atomically; returns both paths."""
    out = Path(out)
    groups = groups_path(out)
    write_parquet(groups, result.groups_table(pool.ids))
    write_parquet(out, pool.table.take(pa.array(result.keep)))
    return out, groups


def groups_path(out: str | Path) -> Path:
    """Where the groups table of a kept pool written at ``out`` goes."""
    out = Path(out)
    return out.with_name(f"{out.stem}.groups.parquet")


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    unit = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if unit.ndim != 2 or unit.shape[1] == 0:
        raise ValueError(f"vectors must be a non-empty (n, d) array, got shape {unit.shape}")
    if not np.isfinite(unit).all():
        raise ValueError(f"vectors contain NaN or inf (first in row "
                         f"{int(np.flatnonzero(~np.isfinite(unit).all(axis=1))[0])})")
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    np.divide(unit, norms, out=unit, where=norms > 0)
    return unit


def _store_rows(pool: Pool, directory: str | Path) -> np.ndarray:
    """The datastore's rows of the pool's ids, flattened (checkpoints * dim), as float32."""
    from curation.datastore import open_datastore

    store = open_datastore(directory)
    row_of = {str(i): r for r, i in enumerate(store.ids)}
    missing = [i for i in pool.ids if i not in row_of]
    if missing:
        raise CurationError(f"datastore {directory}: has no rows for {len(missing)} pool ids "
                            f"(first {missing[0]!r}); build it on this pool")
    flat = np.concatenate([np.asarray(s, np.float32).reshape(len(s), -1) for s in store.shards()])
    return flat[np.array([row_of[i] for i in pool.ids], np.int64)]
