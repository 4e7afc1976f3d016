"""Tests for the GTP selector: reading a gradient store in place, checkpoint weighting, scale
options, lineage config, rounds, targets, checkpoint normalisation, and de-duplication on
real data."""

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
    got = make_selector("gtp", target="mean", checkpoint_weighting=weighting).select(inputs, 40)
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


def test_no_cosine_fill_when_no_atom_correlates(tmp_path) -> None:
    rng = np.random.default_rng(2)
    pool = np.abs(rng.standard_normal((50, 1, 8))).astype(np.float16)
    target = -np.abs(rng.standard_normal((3, 1, 8))).astype(np.float16)
    stores = {"pool": _store(tmp_path, "pool", [pool], [1.0]),
              "target": _store(tmp_path, "target", [target], [1.0])}
    inputs = SelectionInputs(np.array([f"e{i}" for i in range(50)], dtype=object),
                             lambda kind: stores["pool"], lambda kind: stores["target"])
    got = make_selector("gtp").select(inputs, 5)
    assert len(got) == 0 and got.info["n_rounds"] == 0 and got.info["relative_residual"] == 1.0


def test_rounds_spend_the_budget_past_the_first_pursuit(tmp_path) -> None:
    """d = 8 columns: one pursuit stops at <= 8 atoms (the residual is then zero or has no
    positive correlation left); further rounds, each over the rows not yet picked, fill k."""
    from curation.selectors.gtp_rounds import over_unpicked, pursue_rounds, unpicked

    rng = np.random.default_rng(3)
    pool = np.abs(rng.standard_normal((120, 2, 4))).astype(np.float16)
    target = np.abs(rng.standard_normal((5, 2, 4))).astype(np.float16)
    stores = {"pool": _store(tmp_path, "pool", [pool[:70], pool[70:]], [1.0, 1.0]),
              "target": _store(tmp_path, "target", [target], [1.0, 1.0])}
    inputs = SelectionInputs(np.array([f"e{i}" for i in range(120)], dtype=object),
                             lambda kind: stores["pool"], lambda kind: stores["target"])
    single = make_selector("gtp", target="mean", rounds=1).select(inputs, 40)
    assert len(single) <= 8 and single.info["n_rounds"] == 1
    got = make_selector("gtp", target="mean").select(inputs, 40)
    rounds = got.info["rounds"]
    assert len(got) == 40 and len(np.unique(got.indices)) == 40 and len(rounds) >= 5
    assert sum(r["picks"] for r in rounds) == 40 and got.info["n_rounds"] == len(rounds)
    assert all(0 <= r["relative_residual"] < 1 for r in rounds)
    assert (got.weights > 0).all()  # every round's weights are kept
    np.testing.assert_array_equal(got.indices[:len(single)], single.indices)
    # round 2 is a fresh pursuit over the rows round 1 did not pick, in pool row numbers
    taken = np.zeros(120, bool)
    taken[single.indices] = True
    parts, rows = unpicked(stores["pool"].atoms(), taken)
    assert len(rows) == 120 - len(single) and sum(p.stop - p.start for p in parts) == len(rows)
    second = pursuit(parts, target.reshape(5, 8).astype(np.float64).mean(axis=0), 40)
    n2 = rounds[1]["picks"]
    np.testing.assert_array_equal(got.indices[len(single):len(single) + n2],
                                  rows[second.indices])
    mean = target.reshape(5, 8).mean(axis=0)
    again = pursue_rounds(stores["pool"].atoms(), mean, 40,
                          over_unpicked(lambda parts, t, k: pursuit(parts, t, k)), max_rounds=2)
    assert len(again.rounds) == 2 and again.indices == list(got.indices[:len(again.indices)])
    # masking the taken rows (what an index-searched pursuit does) picks the same rows
    sliced = pursue_rounds(stores["pool"].atoms(), mean, 40,
                           over_unpicked(lambda parts, t, k: pursuit(parts, t, k)))
    masked = pursue_rounds(stores["pool"].atoms(), mean, 40,
                           lambda atoms, t, k, taken: pursuit(atoms, t, k, exclude=taken))
    assert masked.indices == sliced.indices == list(got.indices)
    assert [r["picks"] for r in masked.rounds] == [r["picks"] for r in sliced.rounds]
    np.testing.assert_allclose([r["relative_residual"] for r in masked.rounds],
                               [r["relative_residual"] for r in sliced.rounds], atol=1e-12)


def test_cluster_and_example_targets_split_the_budget(tmp_path) -> None:
    from curation.selectors.gtp_targets import split_budget, target_trajectories

    np.testing.assert_array_equal(split_budget(10, np.array([0.5, 0.3, 0.2])), [5, 3, 2])
    np.testing.assert_array_equal(split_budget(4, np.array([1, 1, 1]) / 3), [2, 1, 1])
    inputs, _, target_store = _inputs(tmp_path, seed=4)
    targets, shares = target_trajectories(target_store, "clusters", 3, 0)
    rows = _float32_copy(target_store, None).astype(np.float64)
    assert targets.shape == (3, rows.shape[1]) and shares.sum() == pytest.approx(1.0)
    # the share-weighted cluster means are the overall mean
    np.testing.assert_allclose(shares @ targets, rows.mean(axis=0), rtol=1e-6, atol=1e-9)
    examples, even = target_trajectories(target_store, "examples", 3, 0)
    np.testing.assert_allclose(examples, rows, rtol=1e-6)
    assert np.allclose(even, 1 / 12)
    for kind in ("clusters", "examples"):
        got = make_selector("gtp", target=kind, clusters=3).select(inputs, 24)
        assert len(got) == 24 and len(np.unique(got.indices)) == 24
        assert got.info["n_targets"] == (3 if kind == "clusters" else 12)
    config = make_selector("gtp", target="clusters", clusters=3).config()
    assert config["target"] == "clusters" and config["clusters"] == 3 and config["rounds"] == 0
    assert config != make_selector("gtp").config()
    with pytest.raises(CurationError, match="gtp 'target'"):
        make_selector("gtp", target="median")


def test_checkpoint_norm_scales_each_checkpoint_to_unit_rms(tmp_path) -> None:
    from curation.selectors.gtp import checkpoint_scale

    _, pool_store, _ = _inputs(tmp_path, seed=5)
    rows = np.concatenate([s.astype(np.float64) for s in pool_store.shards()])
    scale = checkpoint_scale(pool_store, "uniform", "unit").reshape(pool_store.checkpoints, -1)
    scaled = rows * scale[None]
    np.testing.assert_allclose(np.sqrt(np.square(scaled).sum(axis=2).mean(axis=0)), 1.0,
                               rtol=1e-9)
    assert checkpoint_scale(pool_store, "uniform", "none") is None


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


def test_round_size_caps_each_round(tmp_path) -> None:
    inputs, _, _ = _inputs(tmp_path, seed=5)
    got = make_selector("gtp", target="mean", round_size=3).select(inputs, 20)
    picks = [r["picks"] for r in got.info["rounds"]]
    assert len(got) == 20 and max(picks) <= 3 and sum(picks) == 20
    assert len(np.unique(got.indices)) == 20


def test_near_duplicate_guard_skips_copies_of_picks(tmp_path) -> None:
    """Each of 30 sources has two near-copies (cosine > 0.99): without the guard a later
    round picks copies of earlier picks; with max_cosine=0.95 no two picks share a source."""
    rng = np.random.default_rng(6)
    sources = np.abs(rng.standard_normal((30, 2, 8)))
    copies = sources[np.repeat(np.arange(30), 3)] * (1 + 0.01 * rng.standard_normal((90, 2, 8)))
    target = np.abs(rng.standard_normal((4, 2, 8))).astype(np.float16)
    stores = {"pool": _store(tmp_path, "pool", [copies[:50].astype(np.float16),
                                                copies[50:].astype(np.float16)], [1.0, 1.0]),
              "target": _store(tmp_path, "target", [target], [1.0, 1.0])}
    inputs = SelectionInputs(np.array([f"e{i}" for i in range(90)], dtype=object),
                             lambda kind: stores["pool"], lambda kind: stores["target"])
    plain = make_selector("gtp", target="mean").select(inputs, 25)
    assert len(np.unique(plain.indices // 3)) < len(plain)  # redundant picks happen
    guarded = make_selector("gtp", target="mean", max_cosine=0.95).select(inputs, 25)
    assert len(guarded) == 25 and len(np.unique(guarded.indices // 3)) == 25
    assert make_selector("gtp", max_cosine=0.95).config()["max_cosine"] == 0.95


def test_input_guard_skips_copies_whose_gradients_differ(tmp_path) -> None:
    """Copies with near-identical inputs but unrelated trajectories (a flipped label sends a
    copy's gradient elsewhere): the trajectory guard cannot see them, the input guard can."""
    rng = np.random.default_rng(8)
    trajectories = np.abs(rng.standard_normal((90, 2, 8))).astype(np.float16)
    features = rng.standard_normal((30, 12))[np.repeat(np.arange(30), 3)]
    features += 0.01 * rng.standard_normal(features.shape)
    target = np.abs(rng.standard_normal((4, 2, 8))).astype(np.float16)
    stores = {"pool": _store(tmp_path, "pool", [trajectories], [1.0, 1.0]),
              "target": _store(tmp_path, "target", [target], [1.0, 1.0])}
    ids = np.array([f"e{i}" for i in range(90)], dtype=object)
    inputs = SelectionInputs(ids, lambda kind: stores["pool"], lambda kind: stores["target"],
                             pool_features=lambda: features)
    plain = make_selector("gtp", target="mean", max_cosine=0.95,
                          max_input_cosine=1.0).select(inputs, 25)
    assert len(np.unique(plain.indices // 3)) < len(plain)  # copies picked
    guarded = make_selector("gtp", target="mean", max_input_cosine=0.95).select(inputs, 25)
    assert len(guarded) == 25 and len(np.unique(guarded.indices // 3)) == 25
    # unset, the guard runs at its default where there are input features, and is off
    # (not an error) where there are none
    default = make_selector("gtp", target="mean").select(inputs, 25)
    assert default.info["max_input_cosine"] == [0.7]
    assert len(default) == 25 and len(np.unique(default.indices // 3)) == 25
    no_features = SelectionInputs(ids, lambda kind: stores["pool"], lambda kind: stores["target"])
    assert make_selector("gtp", target="mean").select(no_features, 25).info[
        "max_input_cosine"] == [1.0]
    with pytest.raises(CurationError, match="input features"):
        make_selector("gtp", max_input_cosine=0.95).select(no_features, 25)


def test_unset_input_guard_relaxes_on_inputs_that_are_all_alike(tmp_path) -> None:
    """Inputs one shared direction plus a little spread (most pairs above 0.8) and three
    copies of each source: a guard set at 0.7 excludes the pool after one pick; unset, it
    relaxes until the budget is spent and still takes one row per source."""
    rng = np.random.default_rng(9)
    trajectories = np.abs(rng.standard_normal((90, 2, 8))).astype(np.float16)
    sources = 3.0 + rng.standard_normal((30, 12))
    features = sources[np.repeat(np.arange(30), 3)] + 0.001 * rng.standard_normal((90, 12))
    target = np.abs(rng.standard_normal((4, 2, 8))).astype(np.float16)
    stores = {"pool": _store(tmp_path, "pool", [trajectories], [1.0, 1.0]),
              "target": _store(tmp_path, "target", [target], [1.0, 1.0])}
    inputs = SelectionInputs(np.array([f"e{i}" for i in range(90)], dtype=object),
                             lambda kind: stores["pool"], lambda kind: stores["target"],
                             pool_features=lambda: features)
    strict = make_selector("gtp", target="mean", max_input_cosine=0.7).select(inputs, 20)
    assert len(strict) == 1 and strict.info["max_input_cosine"] == [0.7]
    relaxed = make_selector("gtp", target="mean").select(inputs, 20)
    assert len(relaxed) == 20 and len(np.unique(relaxed.indices // 3)) == 20
    assert relaxed.info["max_input_cosine"][0] == 0.7 and len(relaxed.info["max_input_cosine"]) > 1


def test_class_targets_split_the_budget_by_the_target_label_mix(tmp_path) -> None:
    _, pool_store, target_store = _inputs(tmp_path, seed=7)
    pool_labels = np.arange(700) % 3
    target_labels = np.array([0] * 6 + [1] * 4 + [2] * 2)
    ids = np.array([f"e{i}" for i in range(700)], dtype=object)
    inputs = SelectionInputs(ids, lambda kind: pool_store, lambda kind: target_store,
                             split_labels=lambda: (pool_labels, target_labels))
    got = make_selector("gtp", target="classes").select(inputs, 24)
    np.testing.assert_array_equal(np.bincount(pool_labels[got.indices], minlength=3), [12, 8, 4])
    assert got.info["n_targets"] == 3 and len(np.unique(got.indices)) == 24
    unlabelled = SelectionInputs(ids, lambda kind: pool_store, lambda kind: target_store)
    with pytest.raises(CurationError, match="class labels"):
        make_selector("gtp", target="classes").select(unlabelled, 24)


def test_auto_target_is_classes_only_for_a_slice_of_the_pool_classes(tmp_path) -> None:
    _, pool_store, target_store = _inputs(tmp_path, seed=7)
    pool_labels = np.arange(700) % 6
    ids = np.array([f"e{i}" for i in range(700)], dtype=object)

    def select(target_labels):
        inputs = SelectionInputs(ids, lambda kind: pool_store, lambda kind: target_store,
                                 split_labels=lambda: (pool_labels, target_labels))
        return make_selector("gtp").select(inputs, 24)

    narrow = select(np.array([0] * 6 + [3] * 6))  # 2 of 6 classes: only their rows
    assert narrow.info["target"] == "classes"
    assert set(pool_labels[narrow.indices]) == {0, 3} and len(narrow) == 24
    wide = select(np.arange(12) % 4)  # 4 of 6 classes
    assert wide.info["target"] == "clusters"
    unlabelled = SelectionInputs(ids, lambda kind: pool_store, lambda kind: target_store)
    assert make_selector("gtp").select(unlabelled, 24).info["target"] == "clusters"
