"""Tests for ``curation.pursuit``: agreement with a from-scratch scipy NNLS reference,
exact recovery, duplicate handling, float16 memmaps, blocking, stacking and validation."""

from __future__ import annotations

import numpy as np
import pytest

from curation.pursuit import pursuit
from tests.reference import reference_pursuit


def _case(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 201))
    d = int(rng.integers(20, 65))
    k = int(rng.integers(5, 16))
    atoms = rng.standard_normal((n, d)).astype(np.float32)
    # a target with a positive drift so non-negative combinations make real progress
    target = atoms[rng.choice(n, 12, replace=False)].mean(axis=0) + 0.3 * rng.standard_normal(d)
    return atoms, target, k


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("nonnegative", [True, False])
def test_matches_reference(seed: int, nonnegative: bool) -> None:
    atoms, target, k = _case(seed)
    got = pursuit(atoms, target, k, nonnegative=nonnegative)
    ref = reference_pursuit(atoms, target, k, nonnegative=nonnegative)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_allclose(got.weights, ref.weights, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got.residual_norms, ref.residual_norms, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got.correlations, ref.correlations, rtol=1e-7, atol=1e-9)
    assert got.indices.dtype == np.int64 and got.weights.dtype == np.float64


def test_matches_reference_unnormalized() -> None:
    atoms, target, k = _case(123)
    atoms *= np.random.default_rng(1).uniform(0.1, 3.0, size=(len(atoms), 1)).astype(np.float32)
    got = pursuit(atoms, target, k, normalize=False)
    ref = reference_pursuit(atoms, target, k, normalize=False)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_allclose(got.weights, ref.weights, rtol=1e-7, atol=1e-9)


def test_exact_recovery() -> None:
    rng = np.random.default_rng(7)
    atoms = rng.standard_normal((200, 64)).astype(np.float32)
    support = np.array([3, 41, 77, 150, 199])
    coef = np.array([1.0, 0.5, 2.0, 0.8, 1.3])
    target = coef @ atoms[support].astype(np.float64)
    res = pursuit(atoms, target, 10)
    assert sorted(res.indices.tolist()) == support.tolist()
    order = np.argsort(res.indices)
    np.testing.assert_allclose(res.weights[order], coef, rtol=1e-9)
    assert res.residual_norms[-1] < 1e-9 * np.linalg.norm(target)


@pytest.mark.parametrize("search", ["exact", "faiss"])
def test_exclude_is_a_pursuit_over_the_other_rows(search: str) -> None:
    atoms, target, k = _case(5)
    off = np.zeros(len(atoms), bool)
    off[pursuit(atoms, target, k).indices[:3]] = True  # the best rows: the picks must change
    off[::7] = True
    kept = np.flatnonzero(~off)
    got = pursuit(atoms, target, k, exclude=off, search=search)
    ref = pursuit(atoms[kept], target, k)
    assert not off[got.indices].any()
    if search == "exact":  # the same pursuit, in the full rows' numbers
        np.testing.assert_array_equal(got.indices, kept[ref.indices])
        np.testing.assert_allclose(got.weights, ref.weights, rtol=1e-9)
    else:  # 200 rows and 1024 candidates per list: the index returns every row
        np.testing.assert_allclose(got.residual_norms[-1], ref.residual_norms[-1], rtol=1e-6)
    with pytest.raises(ValueError, match="exclude must be a bool array"):
        pursuit(atoms, target, k, exclude=np.flatnonzero(off))


def test_near_duplicates_picked_once() -> None:
    rng = np.random.default_rng(3)
    others = rng.standard_normal((90, 48)).astype(np.float32)
    dup = rng.standard_normal(48).astype(np.float32)
    atoms = np.concatenate([np.repeat(dup[None], 10, axis=0), others])
    atoms = atoms[rng.permutation(len(atoms))]
    copies = np.flatnonzero((atoms == dup).all(axis=1))
    target = 2.0 * dup + others[:6].sum(axis=0) + 0.1 * rng.standard_normal(48)
    res = pursuit(atoms, target, 15)
    # top-k by cosine would take all ten copies first
    cosine = atoms @ target / np.linalg.norm(atoms, axis=1)
    assert set(np.argsort(-cosine)[:10]) == set(copies)
    assert np.isin(res.indices, copies).sum() == 1
    assert len(res.indices) == 15


def test_float16_memmap_and_blocks(tmp_path) -> None:
    rng = np.random.default_rng(11)
    atoms16 = rng.standard_normal((300, 40)).astype(np.float16)
    atoms16[0, :3] = [np.float16(6e-8), np.float16(-3e-6), np.float16(-0.0)]  # subnormals
    path = tmp_path / "atoms.npy"
    np.save(path, atoms16)
    mm = np.load(path, mmap_mode="r")
    assert isinstance(mm, np.memmap) and mm.dtype == np.float16
    target = atoms16[[5, 9, 200]].astype(np.float64).sum(axis=0) + 0.2 * rng.standard_normal(40)
    got16 = pursuit(mm, target, 12)
    got32 = pursuit(atoms16.astype(np.float32), target, 12)
    np.testing.assert_array_equal(got16.indices, got32.indices)
    np.testing.assert_allclose(got16.weights, got32.weights, rtol=1e-9)
    ref = reference_pursuit(atoms16, target, 12)
    np.testing.assert_array_equal(got16.indices, ref.indices)
    for kind in (mm, atoms16.astype(np.float32), atoms16.astype(np.float64)):
        whole = pursuit(kind, target, 12, block_rows=10_000)
        for block_rows in (1, 7, 64):
            part = pursuit(kind, target, 12, block_rows=block_rows)
            np.testing.assert_array_equal(part.indices, whole.indices)
            np.testing.assert_array_equal(part.weights, whole.weights)
            np.testing.assert_array_equal(part.correlations, whole.correlations)


def test_parallel_and_serial_kernels_agree(monkeypatch) -> None:
    import curation.pursuit.kernels as mod

    rng = np.random.default_rng(2)
    atoms = rng.standard_normal((500, 48)).astype(np.float32)
    target = atoms[:4].astype(np.float64).sum(axis=0) + 0.1 * rng.standard_normal(48)
    for kind in (atoms, atoms.astype(np.float16), atoms.astype(np.float64)):
        serial = pursuit(kind, target, 20)
        monkeypatch.setattr(mod, "_PARALLEL_MIN_SIZE", 0)
        parallel = pursuit(kind, target, 20)
        monkeypatch.undo()
        np.testing.assert_array_equal(parallel.indices, serial.indices)
        np.testing.assert_array_equal(parallel.correlations, serial.correlations)
        np.testing.assert_array_equal(parallel.weights, serial.weights)


def test_non_contiguous_atoms() -> None:
    atoms, target, k = _case(5)
    fortran = np.asfortranarray(atoms)
    np.testing.assert_array_equal(pursuit(fortran, target, k, block_rows=16).indices,
                                  pursuit(atoms, target, k).indices)


def test_multi_target_stacking() -> None:
    rng = np.random.default_rng(5)
    t, d = 3, 16
    atoms = rng.standard_normal((120, t * d)).astype(np.float32)
    support = [4, 60, 99]
    targets = (np.array([1.0, 0.7, 0.4]) @ atoms[support]).reshape(t, d)
    res = pursuit(atoms, targets, 8)
    flat = pursuit(atoms, targets.reshape(-1), 8)
    np.testing.assert_array_equal(res.indices, flat.indices)
    assert sorted(res.indices.tolist()) == support
    with pytest.raises(ValueError, match=r"target\.size must equal atoms\.shape\[1\]"):
        pursuit(atoms, targets[:, :-1], 8)


def test_validation_errors() -> None:
    atoms = np.ones((10, 4), np.float32) + np.eye(10, 4, dtype=np.float32)
    target = np.ones(4)
    with pytest.raises(ValueError, match="exceeds the number of atoms"):
        pursuit(atoms, target, 11)
    with pytest.raises(ValueError, match="k must be >= 1"):
        pursuit(atoms, target, 0)
    with pytest.raises(ValueError, match="target contains NaN"):
        pursuit(atoms, np.array([1.0, np.nan, 0.0, 0.0]), 2)
    with pytest.raises(ValueError, match="does not match atoms shape"):
        pursuit(atoms, np.ones(5), 2)
    with pytest.raises(ValueError, match="target must be"):
        pursuit(atoms, np.ones((1, 2, 2)), 2)
    with pytest.raises(ValueError, match="2-D"):
        pursuit(atoms[0], target, 1)
    with pytest.raises(ValueError, match="dtype must be float16, float32 or float64"):
        pursuit(atoms.astype(np.int32), target, 2)
    bad = atoms.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="atoms contain NaN or inf .*row 3"):
        pursuit(bad, target, 2)
    with pytest.raises(ValueError, match="atoms contain NaN or inf .*row 3"):
        pursuit(bad.astype(np.float16), target, 2)
    with pytest.raises(ValueError, match="block_rows"):
        pursuit(atoms, target, 2, block_rows=0)


@pytest.mark.parametrize("seed", range(4))
def test_residuals_non_increasing_and_weights_nonnegative(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = 40
    base = rng.standard_normal((6, d))
    # strongly correlated atoms: the non-negative refit drops and re-picks atoms
    atoms = (rng.standard_normal((200, 6)) @ base + 0.3 * rng.standard_normal((200, d)))
    target = np.abs(rng.standard_normal(6)) @ base + 0.5 * rng.standard_normal(d)
    res = pursuit(atoms.astype(np.float32), target, 35)
    assert (res.weights > 0).all()
    assert (np.diff(res.residual_norms) <= 1e-12 * np.linalg.norm(target)).all()
    assert len(np.unique(res.indices)) == len(res.indices)
    recon = res.weights @ atoms.astype(np.float32)[res.indices].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(target - recon), res.residual_norms[-1],
                               rtol=1e-9)
    ref = reference_pursuit(atoms.astype(np.float32), target, 35)
    np.testing.assert_array_equal(res.indices, ref.indices)
    np.testing.assert_allclose(res.weights, ref.weights, rtol=1e-6, atol=1e-9)


def test_zero_target_and_early_stop() -> None:
    atoms, _, _ = _case(0)
    empty = pursuit(atoms, np.zeros(atoms.shape[1]), 5)
    assert len(empty.indices) == len(empty.residual_norms) == 0
    # a target with no positive correlation to any atom: nothing to pick
    pos = np.abs(atoms)
    res = pursuit(pos, -np.ones(atoms.shape[1]), 5)
    assert len(res.indices) == 0
    assert len(pursuit(pos, -np.ones(atoms.shape[1]), 5, nonnegative=False).indices) == 5


def test_cholesky_delete() -> None:
    from curation.pursuit.nnls import _chol_append, _chol_delete

    rng = np.random.default_rng(0)
    m = 9
    V = rng.standard_normal((m, 20))
    G = V @ V.T
    for pos in range(m):
        L = np.zeros((m + 2, m + 2))
        perm = np.zeros(m + 2, np.int64)
        for s in range(m):
            assert _chol_append(L, perm, s, G, s)
        _chol_delete(L, perm, m, pos)
        keep = [i for i in range(m) if i != pos]
        assert perm[: m - 1].tolist() == keep
        sub = L[: m - 1, : m - 1]
        np.testing.assert_allclose(sub @ sub.T, G[np.ix_(keep, keep)], rtol=1e-10, atol=1e-10)
        assert np.allclose(np.triu(L, 1), 0.0) and np.allclose(L[m - 1:], 0.0)
