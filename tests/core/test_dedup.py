"""Near-duplicate removal: planted groups, determinism, the threshold's edge, the vectors."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.datastore import FORMAT_VERSION
from curation.dedup import DedupConfig, dedup_vectors, find_duplicates, write_dedup
from curation.errors import CurationError
from curation.io import sha256_file
from curation.pool import features_table, validate_table


def _planted(seed=0, n=300, groups=40, copies=3, d=64):
    """Distinct random rows, then ``copies`` noisy copies (cosine ~0.99) of ``groups`` of them."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d))
    sources = rng.choice(n, groups, replace=False)
    dups = np.repeat(base[sources], copies, axis=0)
    dups += 0.1 * rng.standard_normal(dups.shape)
    vectors = np.vstack([base, dups]).astype(np.float32)
    ids = np.array([f"row-{i:04d}" for i in range(n)]
                   + [f"row-{s:04d}-dup{c}" for s in sources for c in range(copies)], dtype=object)
    return ids, vectors, sources


def test_each_planted_group_keeps_one_row_and_every_distinct_row_stays():
    ids, vectors, sources = _planted()
    result = find_duplicates(ids, vectors, 0.95)
    assert len(result.keep) == 300 and result.n_removed == 120
    # the kept row of each group is its smallest id: the source
    assert sorted(ids[result.kept_rows]) == sorted(f"row-{s:04d}" for s in sources)
    for kept, removed in zip(result.kept_rows, result.removed_rows, strict=True):
        assert {i.split("-dup")[0] for i in ids[removed]} == {ids[kept]}
    table = result.groups_table(ids)
    assert table.column_names == ["group", "kept_id", "removed_ids"] and table.num_rows == 40


def test_the_kept_rows_do_not_depend_on_row_order_or_batch_size():
    ids, vectors, _ = _planted(seed=1)
    order = np.random.default_rng(5).permutation(len(ids))
    a = find_duplicates(ids, vectors, 0.95)
    b = find_duplicates(ids[order], vectors[order], 0.95, batch_rows=7)
    assert sorted(ids[a.keep]) == sorted(ids[order][b.keep])
    assert a.groups_table(ids).equals(b.groups_table(ids[order]))


def test_threshold_edge_chains_and_zero_rows():
    c = 0.9
    e1, e2, e3 = np.eye(3, dtype=np.float64)
    pair = np.array([e1, c * e1 + np.sqrt(1 - c * c) * e2, e3, e3 * 2, np.zeros(3), np.zeros(3)])
    ids = np.array(list("abcdef"), dtype=object)
    at = find_duplicates(ids, pair, c)
    assert [list(ids[r]) for r in at.removed_rows] == [["b"], ["d"]]  # cosine == threshold is in
    above = find_duplicates(ids, pair, c + 1e-4)
    assert [list(ids[r]) for r in above.removed_rows] == [["d"]]
    exact = find_duplicates(ids, pair, 1.0)  # copies only; zero rows have no direction
    assert [list(ids[r]) for r in exact.removed_rows] == [["d"]] and len(exact.keep) == 5
    # a chain a~b~c with a and c below the threshold is one group
    angle = np.deg2rad(20)
    chain = np.array([[np.cos(t), np.sin(t)] for t in (0, angle, 2 * angle)])
    assert chain[0] @ chain[2] < np.cos(angle) - 0.1
    grouped = find_duplicates(np.array(["x", "y", "z"], dtype=object), chain, np.cos(angle))
    assert len(grouped.keep) == 1 and list(grouped.removed_rows[0]) == [1, 2]


def test_config_checks_name_the_field():
    with pytest.raises(CurationError, match="dedup 'threshold'"):
        DedupConfig(threshold=1.5)
    with pytest.raises(CurationError, match="dedup 'on'"):
        DedupConfig(on="pixels")
    with pytest.raises(ValueError, match=r"NaN or inf \(first in row 1\)"):
        find_duplicates(np.array(["a", "b"], dtype=object), np.array([[1.0], [np.nan]]), 0.9)


def _store(directory, ids, rows):
    """A gradient datastore directory in the on-disk format, rows as (n, 2, dim) float16."""
    directory.mkdir()
    np.save(directory / "shard-00000.npy", rows.astype(np.float16))
    pq.write_table(pa.table({"id": list(ids)}), directory / "ids.parquet")
    (directory / "manifest.json").write_text(json.dumps({
        "format": FORMAT_VERSION, "n": len(ids), "dim": rows.shape[2], "datastore_id": "t",
        "shards": [{"file": "shard-00000.npy",
                    "sha256": sha256_file(directory / "shard-00000.npy")}]}))
    return directory


def test_vectors_from_features_and_from_a_gradient_store(tmp_path):
    ids, vectors, _ = _planted(n=50, groups=5, copies=1, d=8)
    pool = validate_table(features_table(list(ids), vectors), source="p.parquet",
                          require_label=False)
    np.testing.assert_array_equal(dedup_vectors(pool, "features"), vectors)
    # the store's rows in another order: matched by id
    order = np.random.default_rng(0).permutation(len(ids))
    store = _store(tmp_path / "store", ids[order], vectors[order].reshape(-1, 2, 4))
    np.testing.assert_allclose(dedup_vectors(pool, "gradients", store=store),
                               vectors.astype(np.float16), rtol=1e-3)
    with pytest.raises(CurationError, match="has no text to embed"):
        dedup_vectors(pool, "embeddings")
    short = _store(tmp_path / "short", ids[:10], vectors[:10].reshape(-1, 2, 4))
    with pytest.raises(CurationError, match="has no rows for 45 pool ids"):
        dedup_vectors(pool, "gradients", store=short)


def test_text_vectors_find_copies_with_words_dropped():
    texts = ["the quick brown fox jumps over the lazy dog near the river bank today",
             "the quick brown fox jumps over lazy dog near the river bank today",
             "stock markets fell sharply after the central bank raised interest rates",
             "a recipe for bread needs flour water salt yeast and some patience"]
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    pool = validate_table(pa.table({"id": list(ids), "text": texts}), source="t",
                          require_label=False)
    result = find_duplicates(ids, dedup_vectors(pool, "text"), 0.9)
    assert [list(ids[r]) for r in result.removed_rows] == [["b"]] and len(result.keep) == 3
    with pytest.raises(CurationError, match="compare 'text' or 'embeddings' instead"):
        dedup_vectors(pool, "features")


def test_written_pool_keeps_every_column_and_the_groups(tmp_path):
    ids, vectors, _ = _planted(n=30, groups=3, copies=2, d=8)
    pool = validate_table(features_table(list(ids), vectors, labels=np.arange(len(ids)) % 3,
                                         domain=["x"] * len(ids)), source="p", require_label=False)
    result = find_duplicates(pool.ids, vectors, 0.95)
    kept, groups = write_dedup(pool, result, tmp_path / "kept.parquet")
    table = pq.read_table(kept)
    assert table.column_names == pool.table.column_names and table.num_rows == 30
    assert pq.read_table(groups).num_rows == 3 and groups.name == "kept.groups.parquet"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.groups.parquet", "kept.parquet"]
