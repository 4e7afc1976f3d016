import numpy as np
import pytest

from curation.datastore import GradientStore
from curation.errors import CurationError
from curation.selectors import SelectionInputs, make_selector, resolve_budget
from curation.selectors.base import top_k
from curation.selectors.less import less_scores


def test_budget_is_fraction_or_count():
    assert resolve_budget(0.1, 1000) == 100
    assert resolve_budget(0.0001, 1000) == 1
    assert resolve_budget(25, 1000) == 25
    for bad, message in [(0, "must be > 0"), (-1, "must be > 0"), (float("nan"), "must be > 0"),
                         (2000, "larger than the pool"), (2.5, "whole count")]:
        with pytest.raises(CurationError, match=message):
            resolve_budget(bad, 1000)


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(CurationError, match="unknown selector 'nope'"):
        make_selector("nope")
    with pytest.raises(CurationError, match="has no option"):
        make_selector("less", seed=3)
    with pytest.raises(CurationError, match="less 'reduce': Input should be 'max' or 'mean'"):
        make_selector("less", reduce="median")


def test_random_is_seeded():
    inputs = SelectionInputs(np.array([f"e{i}" for i in range(50)], dtype=object))
    a = make_selector("random", seed=1).select(inputs, 10)
    b = make_selector("random", seed=1).select(inputs, 10)
    c = make_selector("random", seed=2).select(inputs, 10)
    assert list(a.ids) == list(b.ids) != list(c.ids)
    assert len(set(a.indices)) == 10
    assert a.to_table().column_names == ["id", "weight", "score", "rank"]


def test_top_k_breaks_ties_by_index():
    assert list(top_k(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 3)) == [1, 2, 4]


def test_less_scores_match_brute_force():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((23, 3, 8)).astype(np.float32)
    target = rng.standard_normal((4, 3, 8)).astype(np.float32)
    lrs = np.array([1.0, 0.5, 0.25])
    got = less_scores([pool[:10], pool[10:]], [target], lrs, block_rows=4)
    expected = np.zeros(23)
    for i in range(23):
        sims = []
        for j in range(4):
            cos = [pool[i, c] @ target[j, c] / np.linalg.norm(pool[i, c])
                   / np.linalg.norm(target[j, c]) for c in range(3)]
            sims.append(np.dot(lrs / lrs.sum(), cos))
        expected[i] = max(sims)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _store(tmp_path, name, array, lrs):
    from curation.io import write_npy

    directory = tmp_path / name
    write_npy(directory / "shard-00000.npy", array)
    manifest = {"n": len(array), "dim": array.shape[2], "datastore_id": name,
                "proxy_checkpoints": ["x"] * array.shape[1], "checkpoint_lrs": list(lrs),
                "shards": [{"file": "shard-00000.npy"}]}
    return GradientStore(directory, manifest)


def test_gtp_skips_duplicates_that_less_picks(tmp_path):
    """Ten copies of the atom most aligned with the target: LESS takes them all, GTP one."""
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((30, 1, 40)).astype(np.float32)
    target = basis[:6].sum(axis=0, keepdims=True) + 0.01 * rng.standard_normal((1, 1, 40))
    best = basis[:6].sum(axis=0) * 0.9  # the single most similar atom
    pool = np.concatenate([np.repeat(best[None], 10, axis=0), basis]).astype(np.float32)
    stores = {"sgd": _store(tmp_path, "pool", pool, [1.0]),
              "adam": _store(tmp_path, "pool", pool, [1.0])}
    inputs = SelectionInputs(np.array([f"e{i}" for i in range(len(pool))], dtype=object),
                             stores.__getitem__,
                             lambda kind: _store(tmp_path, "target", target, [1.0]))
    less = make_selector("less").select(inputs, 10)
    gtp = make_selector("gtp").select(inputs, 10)
    assert set(less.indices) == set(range(10))
    assert len(set(gtp.indices) & set(range(10))) <= 1
    assert gtp.info["relative_residual"] < 0.2
    again = make_selector("gtp").select(inputs, 10)
    assert list(again.indices) == list(gtp.indices)


def test_el2n_and_loss_scores_match_hand_computation():
    from curation.selectors.el2n import difficulty

    probs = np.array([[[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]],
                      [[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]]], dtype=np.float32)
    labels = np.array([0, 0, 1])
    el2n = difficulty(probs, labels, "el2n")
    expected = [np.mean([np.hypot(0.3, 0.3), np.hypot(0.1, 0.1)]),
                np.mean([np.hypot(0.8, 0.8), np.hypot(0.6, 0.6)]),
                np.hypot(0.5, 0.5)]
    np.testing.assert_allclose(el2n, expected, rtol=1e-6)
    loss = difficulty(probs, labels, "loss")
    np.testing.assert_allclose(loss, [-np.mean(np.log([0.7, 0.9])), -np.mean(np.log([0.2, 0.4])),
                                      -np.log(0.5)], rtol=1e-6)
    inputs = SelectionInputs(np.array(["a", "b", "c"], dtype=object),
                             proxy_predictions=lambda: (probs, labels))
    assert list(make_selector("el2n").select(inputs, 2).ids) == ["b", "c"]
    assert list(make_selector("el2n", keep="easy").select(inputs, 1).ids) == ["a"]
    with pytest.raises(CurationError, match="needs the trained proxy"):
        make_selector("el2n").select(SelectionInputs(inputs.ids), 1)
