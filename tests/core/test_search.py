"""Tests for inner-product search in pursuit (``search="faiss"``), the search registry, and the
datastore's index artifact (built once, checksummed in the manifest, rebuilt when stale)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curation.datastore import FORMAT_VERSION, open_datastore
from curation.datastore.index import store_index
from curation.errors import CurationError
from curation.io import sha256_file, write_json, write_npy
from curation.pursuit import pursuit
from curation.pursuit.atoms import AtomSource
from curation.search import SEARCH_BACKENDS, SearchIndex, search_backend
from curation.selectors import SelectionInputs, make_selector


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """faiss's OpenMP threads spin when the cores are shared; one thread is faster there."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def _clustered(n: int = 2000, d: int = 32, clusters: int = 30, seed: int = 0):
    """Rows around a few dozen directions, and a target mixing five of them."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d))
    rows = centers[rng.integers(clusters, size=n)] + 0.3 * rng.standard_normal((n, d))
    target = np.abs(rng.standard_normal(5)) @ centers[:5]
    return rows.astype(np.float16), target


def _write_store(tmp_path, rows: np.ndarray):
    directory = tmp_path / "store"
    shards = [rows[: len(rows) // 2, None], rows[len(rows) // 2:, None]]
    entries = []
    for i, shard in enumerate(shards):
        path = write_npy(directory / f"shard-{i:05d}.npy", shard)
        entries.append({"file": path.name, "sha256": sha256_file(path)})
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [f"e{i}" for i in range(len(rows))]}),
                   directory / "ids.parquet")
    write_json(directory / "manifest.json", {
        "format": FORMAT_VERSION, "n": len(rows), "dim": rows.shape[1], "datastore_id": "s1",
        "dtype": "float16", "proxy_checkpoints": ["x"], "checkpoint_lrs": [1.0],
        "shards": entries})
    return open_datastore(directory)


def test_registry_names_the_backends() -> None:
    assert set(SEARCH_BACKENDS) == {"exact", "faiss"}
    with pytest.raises(ValueError, match="search must be one of"):
        search_backend("annoy")


def test_faiss_pursuit_finds_the_exact_residual_on_clustered_atoms() -> None:
    rows, target = _clustered()
    exact = pursuit(rows, target, 10)
    searched = pursuit(rows, target, 10, search="faiss")
    rel = [r.residual_norms[-1] / np.linalg.norm(target) for r in (exact, searched)]
    assert len(searched.indices) == 10
    assert (searched.weights > 0).all()
    assert rel[1] <= 1.05 * rel[0] + 1e-9
    # the default is today's exact pass, unchanged
    again = pursuit(rows, target, 10, search="exact")
    np.testing.assert_array_equal(again.indices, exact.indices)


def test_faiss_pursuit_candidates_are_rescored_exactly() -> None:
    rows, target = _clustered(n=800)
    result = pursuit(rows, target, 1, search="faiss")
    cosine = rows.astype(np.float64) @ target / np.linalg.norm(rows.astype(np.float64), axis=1)
    assert result.correlations[0] == pytest.approx(cosine[result.indices[0]], rel=1e-6)
    assert result.indices[0] == int(np.argmax(cosine))  # the best row is the top cluster's


def test_search_argument_checks() -> None:
    rows, target = _clustered(n=500)
    with pytest.raises(ValueError, match="refresh must be 1"):
        pursuit(rows, target, 5, search="faiss", refresh=4)
    other = search_backend("faiss").build(AtomSource(rows[:400]))
    with pytest.raises(ValueError, match="index shape"):
        pursuit(rows, target, 5, search="faiss", index=other)


def test_store_index_is_built_once_checksummed_and_rebuilt_when_stale(tmp_path) -> None:
    rows, target = _clustered()
    store = _write_store(tmp_path, rows)
    index = store_index(store)
    manifest = json.loads((store.directory / "manifest.json").read_text())
    entry = manifest["indexes"]["faiss"]
    files = sorted(entry["sha256"])
    assert all(sha256_file(store.directory / f) == entry["sha256"][f] for f in files)
    assert open_datastore(store.directory).indexes["faiss"]["file"] == entry["file"]
    mtime = (store.directory / entry["file"]).stat().st_mtime_ns
    again = store_index(open_datastore(store.directory))  # reused, not rebuilt
    assert (store.directory / entry["file"]).stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.candidates(target, 10), index.candidates(target, 10))
    # a corrupted index file is rebuilt
    (store.directory / entry["file"]).write_bytes(b"garbage")
    store_index(open_datastore(store.directory))
    assert sha256_file(store.directory / entry["file"]) == entry["sha256"][entry["file"]]
    # a store whose shards changed gets a new index; the old files go
    manifest = json.loads((store.directory / "manifest.json").read_text())
    manifest["datastore_id"] = "s2"
    write_json(store.directory / "manifest.json", manifest)
    store_index(open_datastore(store.directory))
    fresh = json.loads((store.directory / "manifest.json").read_text())["indexes"]["faiss"]
    assert fresh["file"] != entry["file"]
    assert not (store.directory / entry["file"]).exists()


def test_gtp_search_option(tmp_path) -> None:
    rows, target = _clustered(n=1500)
    pool = _write_store(tmp_path, rows)
    target_dir = tmp_path / "target"
    write_npy(target_dir / "t.npy", np.tile(target.astype(np.float16), (3, 1))[:, None])
    target_store = type(pool)(target_dir, {"n": 3, "dim": rows.shape[1], "datastore_id": "t",
                                           "proxy_checkpoints": ["x"], "checkpoint_lrs": [1.0],
                                           "shards": [{"file": "t.npy"}]})
    inputs = SelectionInputs(pool.ids, lambda kind: pool, lambda kind: target_store)
    exact = make_selector("gtp", target="mean").select(inputs, 8)
    searched = make_selector("gtp", target="mean", search="faiss").select(inputs, 8)
    assert searched.info["relative_residual"] <= 1.05 * exact.info["relative_residual"] + 1e-9
    assert make_selector("gtp", search="faiss").config()["search"] == "faiss"
    assert "indexes" in json.loads((pool.directory / "manifest.json").read_text())
    with pytest.raises(CurationError, match="search"):
        make_selector("gtp", target="mean", search="faiss", refresh=2).select(inputs, 8)
    # every round and cluster searches the index, its picked rows masked
    clustered = make_selector("gtp", search="faiss", clusters=2, max_cosine=0.99)
    exact_clustered = make_selector("gtp", clusters=2, max_cosine=0.99).select(inputs, 40)
    got = clustered.select(inputs, 40)
    assert len(got) == 40 and len(np.unique(got.indices)) == 40
    assert got.info["n_targets"] == exact_clustered.info["n_targets"]
    # with shards, each shard holder indexes its own rows (in process here)
    sharded = make_selector("gtp", search="faiss", clusters=2, shards=2).select(inputs, 40)
    assert len(np.unique(sharded.indices)) == 40
    assert sharded.info["relative_residual"] <= \
        1.05 * exact_clustered.info["relative_residual"] + 1e-9
    assert got.info["relative_residual"] <= \
        1.05 * exact_clustered.info["relative_residual"] + 1e-9
    with pytest.raises(CurationError, match="search"):
        make_selector("gtp", search="nope")


def test_less_max_through_the_compressed_index(monkeypatch) -> None:
    import curation.selectors.less as less

    rng = np.random.default_rng(1)
    centers = rng.standard_normal((20, 2, 32))
    target = (centers[rng.integers(20, size=800)] + 0.2 * rng.standard_normal((800, 2, 32)))
    pool = (centers[rng.integers(20, size=600)] + 0.2 * rng.standard_normal((600, 2, 32)))
    shards = [pool.astype(np.float16)], [target.astype(np.float16)]
    lrs = np.array([1.0, 0.5])
    exact = less.less_scores(*shards, lrs)
    monkeypatch.setattr(less, "_EXACT_TARGETS", 100)
    searched = less.less_scores(*shards, lrs)
    assert (searched <= exact + 1e-5).all()  # re-scored exactly: never above the true max
    # approximate: 40 near-equal targets per cluster, 16 re-scored; the best found is close
    assert (searched >= exact - 0.02).all()


def _low_rank_plus_noise(n: int = 4000, d: int = 128, seed: int = 0):
    """Gradient-like rows: rank-8 structure plus weak isotropic noise; the target a mean of 20
    rows. Once the structure is fitted, the residual lies in the noise."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((8, d)) / np.sqrt(d)
    rows = rng.standard_normal((n, 8)) @ basis + 0.5 * rng.standard_normal((n, d)) / np.sqrt(d)
    return rows.astype(np.float16), rows[rng.choice(n, 20, replace=False)].mean(axis=0)


def test_faiss_pursuit_follows_exact_where_the_residual_is_noise() -> None:
    rows, target = _low_rank_plus_noise()
    exact = pursuit(rows, target, 40)
    searched = pursuit(rows, target, 40, search="faiss")
    assert searched.residual_norms[-1] <= 1.10 * exact.residual_norms[-1]
    assert searched.search_info["steps"] >= 40
    assert 0 < searched.search_info["exact_passes"] < searched.search_info["steps"] / 2


def test_building_an_index_leaves_float32_rows_unchanged() -> None:
    rows, _ = _low_rank_plus_noise(n=600)
    rows = rows.astype(np.float32)
    before = rows.copy()
    index = search_backend("faiss").build(AtomSource(rows), normalize=False)
    np.testing.assert_array_equal(rows, before)
    # the subspace part is exact: the best row by it is among the candidates
    query = rows[7].astype(np.float64) + 0.0
    low_scores = rows @ (index.basis.T @ (index.basis @ query))
    assert int(np.argmax(low_scores)) in index.candidates(query, 5)[0]


class _BlindIndex(SearchIndex):
    """Always offers the first ``m`` rows: an index that misses the best row."""

    def candidates(self, queries, m):
        return np.tile(np.arange(min(m, self.n)), (len(np.atleast_2d(queries)), 1))

    def save(self, path):
        return []


def test_checks_grow_the_candidates_when_the_index_misses() -> None:
    rows, target = _clustered(n=3000)
    norms = np.linalg.norm(rows.astype(np.float32), axis=1)
    blind = _BlindIndex(len(rows), rows.shape[1], norms, True, "blind")
    result = pursuit(rows, target, 4, search="faiss", index=blind, candidates=8)
    exact = pursuit(rows, target, 4)
    # steps 1, 2 and 4 are checked (decided by the exact pass); each check that found the index
    # wrong doubled the candidates
    assert result.search_info["exact_passes"] >= 3
    assert result.search_info["candidates"] > 8
    assert result.indices[0] == exact.indices[0]


class _AllRowsIndex(_BlindIndex):
    """Offers every row: an index that never misses."""

    def candidates(self, queries, m):
        return np.tile(np.arange(self.n), (len(np.atleast_2d(queries)), 1))


def test_checks_thin_out_while_the_index_agrees() -> None:
    rows, _ = _low_rank_plus_noise(n=500, d=64)
    target = rows[:60].astype(np.float64).sum(axis=0)
    norms = np.linalg.norm(rows.astype(np.float32), axis=1)
    for index, fewest in ((_AllRowsIndex(len(rows), 64, norms, True, "all"), None),
                          (_BlindIndex(len(rows), 64, norms, True, "blind"), 8)):
        result = pursuit(rows, target, 50, search="faiss", index=index, candidates=2,
                         tol=1e-12)
        info = result.search_info
        assert info["steps"] >= 40
        if fewest is None:  # checked on steps 1, 2, 4, 8, 16, 32 only
            assert info["exact_passes"] == int(np.log2(info["steps"])) + 1
            assert info["candidates"] == 2
        else:  # each miss doubled the candidates and re-checked the next step, then it thinned
            assert info["candidates"] > 2
            assert fewest <= info["exact_passes"] < info["steps"] / 2


@pytest.mark.parametrize("normalize", [True, False])
def test_float16_rows_are_prepared_as_numpy_would(normalize: bool) -> None:
    from curation.search.base import prepare

    rows = (np.random.default_rng(0).standard_normal((300, 96)) * 0.01).astype(np.float16)
    rows[3] = 0
    got, norms = prepare(rows.view(np.uint16), True, normalize)
    want = rows.astype(np.float64)
    want_norms = np.linalg.norm(want, axis=1)
    if normalize:
        want /= np.where(want_norms > 0, want_norms, 1.0)[:, None]
    assert got.dtype == norms.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(norms, want_norms, rtol=1e-6)
    assert norms[3] == 0 and not got[3].any()
    rows[5, 7] = np.inf
    bad_rows, bad_norms = prepare(rows.view(np.uint16), True, normalize)
    assert np.isnan(bad_norms[5]) and np.isnan(bad_rows[5]).all()


def test_long_candidate_lists_keep_a_short_subspace_list() -> None:
    from curation.search.split import SUBSPACE_LIST

    rows, _ = _low_rank_plus_noise(n=3000)
    index = search_backend("faiss").build(AtomSource(rows))
    query = rows[3].astype(np.float64)
    short, long = index.candidates(query, 100), index.candidates(query, 2500)
    assert short.shape == (1, 200)  # m by the codes, m by the subspace
    assert long.shape == (1, 2500 + SUBSPACE_LIST)
    # the subspace list is the top of the (int8) subspace part
    low_scores = index.subspace_scores((index.basis @ query)[None])[:, 0]
    top = np.argsort(-low_scores)[:SUBSPACE_LIST]
    assert set(top) == set(long[0, 2500:])
    # which is the exact subspace part to within the int8 grid
    rows32 = rows.astype(np.float32) / np.linalg.norm(rows.astype(np.float32), axis=1)[:, None]
    exact = rows32 @ index.basis.T @ (index.basis @ query)
    assert np.abs(low_scores - exact).max() <= 0.01 * np.abs(exact).max()
