"""Tests for the GTP selector: reading a gradient store in place, checkpoint weighting, scale
options, lineage config, the cosine fill, and de-duplication on real data."""

from __future__ import annotations

import numpy as np
import pytest

from curation.datastore import GradientStore
from curation.errors import CurationError
from curation.io import write_npy
from curation.pursuit import pursuit
from curation.selectors import SelectionInputs, make_selector


def _store(tmp_path, name: str, shards: list[np.ndarray], lrs) -> GradientStore:
    directory = tmp_path / name
    entries = []
    for i, shard in enumerate(shards):
        write_npy(directory / f"shard-{i:05d}.npy", shard)
        entries.append({"file": f"shard-{i:05d}.npy"})
    n = sum(len(s) for s in shards)
    manifest = {"n": n, "dim": shards[0].shape[2], "datastore_id": name,
                "proxy_checkpoints": ["x"] * shards[0].shape[1], "checkpoint_lrs": list(lrs),
                "shards": entries}
    return GradientStore(directory, manifest)


def _inputs(tmp_path, seed: int = 0, n: int = 700, checkpoints: int = 3, dim: int = 16):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((6, checkpoints * dim))
    pool = (rng.standard_normal((n, 6)) @ basis + 0.7 * rng.standard_normal((n, checkpoints * dim)))
    target = (np.abs(rng.standard_normal((12, 6))) @ basis
              + 0.7 * rng.standard_normal((12, checkpoints * dim)))
    pool16 = pool.reshape(n, checkpoints, dim).astype(np.float16)
    lrs = [1.0, 0.5, 0.25][:checkpoints]
    pool_store = _store(tmp_path, "pool", [pool16[:300], pool16[300:550], pool16[550:]], lrs)
    target_store = _store(tmp_path, "target",
                          [target.reshape(12, checkpoints, dim).astype(np.float16)], lrs)
    ids = np.array([f"e{i}" for i in range(n)], dtype=object)
    return SelectionInputs(ids, lambda kind: pool_store, lambda kind: target_store), pool_store, \
        target_store


def _float32_copy(store: GradientStore, weights) -> np.ndarray:
    """All rows as one float32 (n, checkpoints * dim) array, each checkpoint block scaled."""
    scale = np.ones(store.checkpoints, np.float32) if weights is None else np.float32(weights)
    return np.concatenate([(shard.astype(np.float32) * scale[None, :, None]).reshape(len(shard), -1)
                           for shard in store.shards()])


@pytest.mark.parametrize("weighting", ["uniform", "lr"])
def test_reads_the_store_in_place_and_matches_its_float32_trajectories(tmp_path, monkeypatch,
                                                                     weighting: str) -> None:
    inputs, pool_store, target_store = _inputs(tmp_path)
    lrs = pool_store.checkpoint_lrs
    weights = lrs / lrs.sum() if weighting == "lr" else None
    # the reference: the old route through a float32 copy of every trajectory
    atoms = _float32_copy(pool_store, weights)
    target = _float32_copy(target_store, weights).astype(np.float64).mean(axis=0)
    expected = pursuit(atoms, target, 40)

    load_shard, read_atoms = GradientStore.shard, GradientStore.atoms
    read = []

    def no_copy(self, index):
        if self.directory == pool_store.directory:
            raise AssertionError("GTP must not build a float32 copy of the store")
        return load_shard(self, index)

    monkeypatch.setattr(GradientStore, "shard", no_copy)
    monkeypatch.setattr(GradientStore, "atoms", lambda self: read.append(self.directory)
                        or read_atoms(self))
    got = make_selector("gtp", checkpoint_weighting=weighting).select(inputs, 40)
    assert read == [pool_store.directory]  # the pool is read in place, as MappedRows
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_allclose(got.weights, expected.weights, rtol=1e-5)
    assert got.info["n_pursuit"] == 40 and got.info["passes"] >= 40


def test_shards_refresh_and_scheduler_options(tmp_path) -> None:
    inputs, _, _ = _inputs(tmp_path, seed=1)
    base = make_selector("gtp").select(inputs, 30)
    sharded = make_selector("gtp", shards=4).select(inputs, 30)
    np.testing.assert_array_equal(sharded.indices, base.indices)
    np.testing.assert_array_equal(sharded.weights, base.weights)
    lazy = make_selector("gtp", refresh=5).select(inputs, 30)  # n = 700: every atom a candidate
    np.testing.assert_array_equal(lazy.indices, base.indices)
    assert lazy.info["passes"] < base.info["passes"]
    # where the work runs is not part of the selection's identity
    config = make_selector("gtp", shards=4, scheduler="tcp://10.0.0.1:8786").config()
    assert "scheduler" not in config and config["shards"] == 4
    assert config == make_selector("gtp", shards=4).config()
    for field, value, problem in (("shards", 0, "greater than or equal to 1"),
                                  ("refresh", 0, "greater than or equal to 1"),
                                  ("shards", 1.5, "a valid integer"), ("refresh", True, "a valid integer")):
        with pytest.raises(CurationError, match=f"gtp '{field}': Input should be {problem}"):
            make_selector("gtp", **{field: value})


def test_fill_by_cosine_when_no_atom_correlates(tmp_path) -> None:
    rng = np.random.default_rng(2)
    pool = np.abs(rng.standard_normal((50, 1, 8))).astype(np.float16)
    target = -np.abs(rng.standard_normal((3, 1, 8))).astype(np.float16)
    stores = {"pool": _store(tmp_path, "pool", [pool], [1.0]),
              "target": _store(tmp_path, "target", [target], [1.0])}
    inputs = SelectionInputs(np.array([f"e{i}" for i in range(50)], dtype=object),
                             lambda kind: stores["pool"], lambda kind: stores["target"])
    got = make_selector("gtp").select(inputs, 5)
    flat = pool.reshape(50, 8).astype(np.float64)
    mean = target.reshape(3, 8).astype(np.float64).mean(axis=0)
    cosine = flat @ mean / np.linalg.norm(flat, axis=1) / np.linalg.norm(mean)
    assert got.info["n_pursuit"] == 0 and got.info["relative_residual"] == 1.0
    np.testing.assert_array_equal(got.indices, np.argsort(-cosine, kind="stable")[:5])
    np.testing.assert_array_equal(got.weights, np.zeros(5))
    np.testing.assert_allclose(got.scores, cosine[got.indices], rtol=1e-5)


def test_gtp_avoids_near_duplicates_that_less_picks_on_real_digits(tmp_path) -> None:
    """Real chain on scikit-learn digits: every pool example appears as 5 near-duplicates."""
    from curation.datastore import DatastoreSpec
    from curation.demo_data import ScenarioConfig, build_scenario
    from curation.pool import features_table, validate_table
    from curation.workflow import GradientSettings, run_selection

    tables = build_scenario(ScenarioConfig("digits", pool_size=100, target_size=30, seed=0))
    pool = validate_table(tables.pool, source="digits pool")
    target = validate_table(tables.target, source="digits target")
    copies = 5
    group = np.repeat(np.arange(len(pool)), copies)
    noisy = pool.features[group] + np.random.default_rng(0).normal(
        0.0, 0.01, (len(group), pool.features.shape[1]))  # pixels are in [0, 1]
    ids = [f"{pool.ids[g]}-copy{i % copies}" for i, g in enumerate(group)]
    duplicated = validate_table(features_table(ids, noisy, pool.labels[group]),
                                source="duplicated digits")
    settings = GradientSettings(datastore=DatastoreSpec(dim=128))
    for k in (25, 50):
        per_group = {}
        for method in ("gtp", "less"):
            selection, _ = run_selection(duplicated, target, make_selector(method), k, tmp_path,
                                         settings)
            per_group[method] = np.bincount(group[selection.indices], minlength=len(pool))
        gtp, less = per_group["gtp"], per_group["less"]
        assert gtp.max() <= 2, f"k={k}: GTP took {gtp.max()} copies of one example"
        assert (less == copies).sum() >= 1, f"k={k}: LESS took no whole group"
        assert (gtp > 0).sum() > 2 * (less > 0).sum()  # GTP covers far more distinct examples
