"""Tests for the scale paths of ``curation.pursuit``: agreement with scikit-learn's OMP, row
blocks and memory-mapped files, per-column scales, lazy refresh, and sharded pursuit in process
and on a Dask ``LocalCluster``."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import orthogonal_mp

import curation.pursuit.driver as mod
from curation.pursuit import MappedRows, correlations, pursuit, sharded_pursuit
from curation.pursuit.atoms import AtomSource


def _problem(seed: int, n: int = 300, d: int = 40):
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n, d)).astype(np.float32)
    target = atoms[rng.choice(n, 10, replace=False)].astype(np.float64).mean(axis=0)
    return atoms, target + 0.3 * rng.standard_normal(d) / np.sqrt(d)


def _gradient_like(seed: int, n: int = 2000, d: int = 64):
    """Low-rank class structure plus noise, and a target that is not a pool combination."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((8, d))
    atoms = rng.standard_normal((n, 8)) @ basis + 0.5 * rng.standard_normal((n, d))
    target = np.abs(rng.standard_normal(8)) @ basis + 0.5 * rng.standard_normal(d)
    return atoms.astype(np.float32), target


def _pick_order(path: np.ndarray) -> list[int]:
    """Atoms in the order orthogonal_mp(return_path=True) added them."""
    order: list[int] = []
    for step in range(path.shape[1]):
        new = [int(i) for i in np.flatnonzero(path[:, step]) if int(i) not in order]
        order.extend(new)
    return order


@pytest.mark.parametrize("seed", range(6))
def test_unconstrained_matches_sklearn_orthogonal_mp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, d, k = int(rng.integers(80, 200)), int(rng.integers(20, 50)), int(rng.integers(4, 15))
    atoms = rng.standard_normal((n, d))
    target = rng.standard_normal(d)
    # scikit-learn scores raw inner products: compare with normalize=False (same rule).
    path = orthogonal_mp(atoms.T, target, n_nonzero_coefs=k, return_path=True)
    coef = path[:, -1]
    got = pursuit(atoms, target, k, nonnegative=False, normalize=False, tol=0.0)
    assert got.indices.tolist() == _pick_order(path)
    np.testing.assert_allclose(got.weights, coef[got.indices], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got.residual_norms[-1], np.linalg.norm(target - atoms.T @ coef),
                               rtol=1e-8)
    # and with unit-norm atoms the default (normalized) scores pick the same atoms
    unit = atoms / np.linalg.norm(atoms, axis=1, keepdims=True)
    path = orthogonal_mp(unit.T, target, n_nonzero_coefs=k, return_path=True)
    assert pursuit(unit, target, k, nonnegative=False, tol=0.0).indices.tolist() \
        == _pick_order(path)


@pytest.mark.parametrize("nonnegative", [True, False])
def test_residuals_non_increasing_in_every_mode(nonnegative: bool, monkeypatch) -> None:
    atoms, target = _gradient_like(0)
    monkeypatch.setattr(mod, "_CANDIDATES", 64)  # so that refresh > 1 really skips passes
    runs = {
        "exact": pursuit(atoms, target, 60, nonnegative=nonnegative),
        "refresh": pursuit(atoms, target, 60, nonnegative=nonnegative, refresh=8),
        "sharded": sharded_pursuit(atoms, target, 60, shards=4, nonnegative=nonnegative,
                                   refresh=8),
    }
    for name, res in runs.items():
        assert len(res.indices) == 60, name
        assert (np.diff(res.residual_norms) <= 1e-12 * np.linalg.norm(target)).all(), name
        recon = res.weights @ atoms[res.indices].astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(target - recon), res.residual_norms[-1],
                                   rtol=1e-9, err_msg=name)
        if nonnegative:
            assert (res.weights > 0).all(), name
    assert runs["refresh"].passes < 30  # lazy steps re-scored only the candidates


def test_deterministic_across_calls() -> None:
    atoms, target = _gradient_like(1)
    for run in (lambda: pursuit(atoms, target, 40),
                lambda: pursuit(atoms, target, 40, refresh=4),
                lambda: sharded_pursuit(atoms, target, 40, shards=3, refresh=4)):
        first, second = run(), run()
        np.testing.assert_array_equal(first.indices, second.indices)
        np.testing.assert_array_equal(first.weights, second.weights)
        np.testing.assert_array_equal(first.residual_norms, second.residual_norms)


def test_row_blocks_and_mapped_rows_equal_one_array(tmp_path) -> None:
    atoms, target = _gradient_like(2, n=500, d=24)
    half = atoms.astype(np.float16)
    whole = pursuit(half, target, 30)
    # a 3-D (rows, checkpoints, dim) file, as the datastore writes, read as (rows, 3 * 8)
    np.save(tmp_path / "a.npy", half[:200].reshape(200, 3, 8))
    np.save(tmp_path / "b.npy", half[200:])
    parts = [MappedRows(str(tmp_path / "a.npy"), 0, 120),
             MappedRows(str(tmp_path / "a.npy"), 120),
             np.load(tmp_path / "b.npy", mmap_mode="r")[:150], half[350:]]
    for block_rows in (7, 65536):
        got = pursuit(parts, target, 30, block_rows=block_rows)
        np.testing.assert_array_equal(got.indices, whole.indices)
        np.testing.assert_array_equal(got.weights, whole.weights)
    np.testing.assert_array_equal(correlations(parts, target), correlations(half, target))
    # rows gathered across part boundaries (read from the files, not through a mapping)
    edges = np.array([0, 119, 120, 199, 200, 349, 350, 499])
    np.testing.assert_array_equal(AtomSource(parts).rows(edges), half[edges])
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 120\)"):
        parts[0].read(np.array([5, 120]))


def test_column_scale_equals_scaled_atoms() -> None:
    atoms, target = _gradient_like(3, n=400, d=30)
    scale = np.repeat([0.5, 0.3, 0.2], 10)
    scaled = atoms.astype(np.float64) * scale
    for nonnegative in (True, False):
        got = pursuit(atoms.astype(np.float16), target * scale, 25, column_scale=scale,
                      nonnegative=nonnegative)
        ref = pursuit(atoms.astype(np.float16).astype(np.float64) * scale, target * scale, 25,
                      nonnegative=nonnegative)
        np.testing.assert_array_equal(got.indices, ref.indices)
        np.testing.assert_allclose(got.weights, ref.weights, rtol=1e-9)
    cos = correlations(atoms, target * scale, column_scale=scale)
    expected = scaled @ (target * scale) / np.linalg.norm(scaled, axis=1)
    np.testing.assert_allclose(cos, expected, rtol=1e-5)


def test_refresh_is_exact_when_every_atom_is_a_candidate(monkeypatch) -> None:
    atoms, target = _gradient_like(4, n=600, d=40)
    exact = pursuit(atoms, target, 40)
    lazy = pursuit(atoms, target, 40, refresh=10)  # n = 600 <= 2048 candidates
    np.testing.assert_array_equal(lazy.indices, exact.indices)
    np.testing.assert_array_equal(lazy.weights, exact.weights)
    assert lazy.passes < exact.passes
    monkeypatch.setattr(mod, "_CANDIDATES", 32)
    few = pursuit(atoms, target, 40, refresh=10)
    # lazy steps pick from the 32 best atoms of the last full pass; still a valid pursuit
    assert len(few.indices) == 40 and few.passes < exact.passes
    assert few.residual_norms[-1] < 1.5 * exact.residual_norms[-1]


@pytest.mark.parametrize("nonnegative", [True, False])
def test_sharded_equals_pursuit_for_any_shard_count(nonnegative: bool, monkeypatch) -> None:
    """Shards only split the full passes; the merge keeps pursuit's order and tie rules."""
    atoms, target = _gradient_like(5, n=1500, d=48)
    half = atoms.astype(np.float16)
    # few candidates, so that lazy steps and the candidate merge across shards are exercised
    monkeypatch.setattr(mod, "_CANDIDATES", 50)
    for refresh in (1, 6):
        ref = pursuit(half, target, 45, nonnegative=nonnegative, refresh=refresh)
        for shards in (1, 2, 7, 300):
            got = sharded_pursuit(half, target, 45, shards=shards, nonnegative=nonnegative,
                                  refresh=refresh)
            np.testing.assert_array_equal(got.indices, ref.indices)
            np.testing.assert_array_equal(got.weights, ref.weights)
            np.testing.assert_array_equal(got.residual_norms, ref.residual_norms)
            assert got.passes == ref.passes
    # ties: identical atoms in different shards resolve to the lowest row, as in pursuit
    tied = np.repeat(half[:10], 3, axis=0)
    np.testing.assert_array_equal(sharded_pursuit(tied, target, 5, shards=3).indices,
                                  pursuit(tied, target, 5).indices)


def test_sharded_search_in_process_equals_pursuit_search() -> None:
    """In process one holder indexes every row: the same index, so the same picks."""
    atoms, target = _gradient_like(6, n=3000, d=48)
    half = atoms.astype(np.float16)
    ref = pursuit(half, target, 30, search="faiss", candidates=64)
    got = sharded_pursuit(half, target, 30, shards=3, search="faiss", candidates=64)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_array_equal(got.weights, ref.weights)
    assert got.search_info == ref.search_info and got.search_info["steps"] >= 30
    with pytest.raises(ValueError, match="refresh must be 1"):
        sharded_pursuit(half, target, 5, shards=2, search="faiss", refresh=3)


def test_validation_of_scale_options(tmp_path) -> None:
    atoms, target = _problem(0)
    for kwargs, message in [({"refresh": 0}, "refresh must be >= 1"),
                            ({"column_scale": np.ones(3)}, r"column_scale must have shape"),
                            ({"column_scale": -np.ones(40)}, "finite and >= 0")]:
        with pytest.raises(ValueError, match=message):
            pursuit(atoms, target, 5, **kwargs)
    for kwargs, message in [({"shards": 0}, "shards must be >= 1"),
                            ({"shards": 301}, "exceeds the number of atoms"),
                            ({"shards": 2, "refresh": 0}, "refresh must be >= 1")]:
        with pytest.raises(ValueError, match=message):
            sharded_pursuit(atoms, target, 5, **kwargs)
    with pytest.raises(ValueError, match="share one dtype"):
        pursuit([atoms[:100], atoms[100:].astype(np.float64)], target, 5)
    with pytest.raises(ValueError, match="different widths"):
        pursuit([atoms[:100], atoms[100:, :20]], target, 5)
    with pytest.raises(ValueError, match="non-empty list"):
        pursuit([], target, 5)
    np.save(tmp_path / "a.npy", atoms)
    with pytest.raises(ValueError, match=r"rows \[0, 400\) are outside the file's 300 rows"):
        pursuit(MappedRows(str(tmp_path / "a.npy"), 0, 400), target, 5)
    with pytest.raises(ValueError, match="pass MappedRows"):
        sharded_pursuit(np.load(tmp_path / "a.npy", mmap_mode="r"), target, 5, shards=2,
                        scheduler="tcp://127.0.0.1:1")


@pytest.mark.slow
def test_dask_local_cluster_equals_in_process(tmp_path, monkeypatch) -> None:
    distributed = pytest.importorskip("distributed")
    atoms, target = _gradient_like(8, n=3000, d=48)
    np.save(tmp_path / "atoms.npy", atoms.astype(np.float16))
    parts = [MappedRows(str(tmp_path / "atoms.npy"), 0, 1700),
             MappedRows(str(tmp_path / "atoms.npy"), 1700)]
    monkeypatch.setattr(mod, "_CANDIDATES", 100)  # read here, sent to the tasks
    local = pursuit(parts, target, 30, refresh=5)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        by_address = sharded_pursuit(parts, target, 30, shards=3, refresh=5,
                                     scheduler=cluster.scheduler_address)
        with distributed.Client(cluster) as client:
            # in-memory rows are sent to the workers once and reused by every pass
            by_client = sharded_pursuit(atoms.astype(np.float16), target, 30, shards=3,
                                        refresh=5, scheduler=client)
        # each worker indexes its own rows; a step gets one best candidate back per worker
        searched = sharded_pursuit(parts, target, 30, shards=3, search="faiss", candidates=64,
                                   scheduler=cluster.scheduler_address)
    exact = pursuit(parts, target, 30)
    assert len(np.unique(searched.indices)) == 30 and searched.search_info["steps"] >= 30
    assert searched.residual_norms[-1] <= 1.05 * exact.residual_norms[-1]
    for other in (by_address, by_client):
        np.testing.assert_array_equal(other.indices, local.indices)
        np.testing.assert_array_equal(other.weights, local.weights)
        np.testing.assert_array_equal(other.residual_norms, local.residual_norms)


def test_mapped_rows_read_runs_and_scattered_rows(tmp_path) -> None:
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((300, 16)).astype(np.float16)
    np.save(tmp_path / "a.npy", rows)
    part = MappedRows(str(tmp_path / "a.npy"), 40, 290)
    # runs of consecutive rows (read in one call each) mixed with single rows
    picked = np.array([0, 1, 2, 3, 9, 50, 51, 200, 248, 249])
    np.testing.assert_array_equal(part.read(picked), rows[40:290][picked])
    np.testing.assert_array_equal(part.read(np.arange(250)), rows[40:290])
    assert part.read(np.zeros(0, np.int64)).shape == (0, 16)


def test_row_cache_returns_the_rows_and_keeps_the_recent_ones(tmp_path) -> None:
    from curation.pursuit.row_cache import RowCache

    rng = np.random.default_rng(8)
    rows = rng.standard_normal((1000, 8)).astype(np.float16)
    np.save(tmp_path / "a.npy", rows)
    cache = RowCache(AtomSource(MappedRows(str(tmp_path / "a.npy"))), max_bytes=100 * 8 * 2)
    assert cache.max_rows == 100
    seen = set()
    for _ in range(40):  # overlapping draws, as consecutive pursuit steps ask
        ask = np.unique(rng.choice(150, 60, replace=False))
        np.testing.assert_array_equal(cache.rows(ask), rows[ask])
        seen.update(ask.tolist())
        assert (cache.slot_of >= 0).sum() <= 100
    assert cache.hits > cache.misses  # most asked rows were served from the cache
    # the slots and the row numbers agree both ways
    held = np.flatnonzero(cache.slot_of >= 0)
    np.testing.assert_array_equal(cache.ids[cache.slot_of[held]], held)
    # a call with more rows than the cache holds reads them all
    np.testing.assert_array_equal(cache.rows(np.arange(500)), rows[:500])


def test_row_cache_scores_equal_the_exact_pass_kernel(tmp_path) -> None:
    from curation.pursuit.kernels import score_block
    from curation.pursuit.row_cache import RowCache

    rng = np.random.default_rng(9)
    for dtype in (np.float16, np.float32):
        rows = rng.standard_normal((400, 24)).astype(dtype)
        np.save(tmp_path / "a.npy", rows)
        src = AtomSource(MappedRows(str(tmp_path / "a.npy")))
        r, inv = rng.standard_normal(24), rng.uniform(0.5, 2.0, 400)
        for max_rows in (400, 50):  # held in the cache; more rows than it holds
            cache = RowCache(src, max_bytes=max_rows * 24 * rows.itemsize)
            ask = np.unique(rng.choice(400, 120, replace=False))
            expected = np.empty(len(ask))
            block = rows[ask].view(np.uint16) if dtype == np.float16 else rows[ask]
            score_block(block, dtype == np.float16, r, inv[ask], expected, serial=True)
            for _ in range(2):  # read, then served from the cache
                np.testing.assert_array_equal(cache.scores(ask, r, inv[ask]), expected)
