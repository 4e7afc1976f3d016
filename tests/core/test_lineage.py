import pytest

from curation.lineage import (
    canonical_json,
    code_version,
    config_hash,
    lineage_problems,
    selection_lineage,
)


def test_config_hash_ignores_key_order_and_numeric_spelling():
    a = {"selector": "gtp", "budget": 0.05, "nested": {"x": 1, "y": [1.0, 2]}}
    b = {"nested": {"y": [1.0, 2], "x": 1}, "budget": 5e-2, "selector": "gtp"}
    assert canonical_json(a) == canonical_json(b)
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash({**a, "budget": 0.1})


def test_config_hash_rejects_non_finite():
    with pytest.raises(ValueError, match="finite"):
        config_hash({"tol": float("nan")})


def test_lineage_record_is_complete():
    record = selection_lineage({"selector": "random", "seed": 0}, budget=0.1, k=10,
                               pool_id="p", datastore_id=None, proxy_checkpoints=[])
    assert {"selector", "config", "config_hash", "datastore_id", "proxy_checkpoints", "pool_id",
            "code_version", "created_at"} <= set(record)
    assert record["config"]["budget"] == 0.1
    assert set(code_version()) == {"git_sha", "dirty", "package_version"}


def test_config_hash_unifies_numbers_and_sequences_but_not_booleans():
    import numpy as np

    assert config_hash({"budget": 25}) == config_hash({"budget": 25.0})
    assert config_hash({"budget": np.float32(0.5)}) == config_hash({"budget": 0.5})
    assert config_hash({"k": np.int64(3), "xs": (1, 2)}) == config_hash({"k": 3, "xs": [1, 2]})
    assert config_hash({"flag": True}) != config_hash({"flag": 1})
    assert config_hash({"tol": 1e-6}) == config_hash({"tol": 0.000001})
    with pytest.raises(ValueError, match="JSON-like"):
        config_hash({"path": object()})


def _complete(**overrides) -> dict:
    record = selection_lineage({"selector": "gtp", "feature_kind": "sgd"}, budget=0.05, k=15,
                               pool_id="a" * 64, datastore_id="0123456789abcdef",
                               proxy_checkpoints=["b" * 64, "c" * 64], target_id="d" * 64,
                               n_pool=300)
    return {**record, **overrides}


def test_a_complete_lineage_has_no_problems():
    assert lineage_problems(_complete(), needs=("gradients", "target")) == []


@pytest.mark.parametrize("overrides, needs, problem", [
    ({"config_hash": "0" * 16}, (), "does not match the config"),
    ({"pool_id": "short"}, (), "'pool_id' must be"),
    ({"pool_id": "a" * 64 + "\n"}, (), "'pool_id' must be"),  # "$" would let it through
    ({"proxy_checkpoints": ["b" * 64 + "\n"]}, (), "must be a list of sha256"),
    ({"k": 0}, (), "'k' must be"),
    ({"n_pool": None}, (), "'n_pool' must be"),
    ({"proxy_checkpoints": []}, ("gradients",), "is empty but the selector reads the proxy"),
    ({"proxy_checkpoints": "b" * 64}, (), "must be a list of sha256"),
    ({"datastore_id": None}, ("gradients",), "'datastore_id' is empty"),
    ({"code_version": {"git_sha": "abc", "dirty": False, "package_version": "0.1"}}, (),
     "'code_version' needs"),
    ({"code_version": {"git_sha": "unknown", "package_version": "0.1"}}, (), "'code_version'"),
    ({"created_at": "last week"}, (), "ISO 8601"),
])
def test_each_lineage_defect_is_named(overrides, needs, problem):
    problems = lineage_problems(_complete(**overrides), needs=needs)
    assert len(problems) == 1 and problem in problems[0]


def test_a_missing_key_is_named():
    record = _complete()
    del record["created_at"]
    assert lineage_problems(record) == ["missing key 'created_at'"]


def test_lineage_names_exactly_what_each_selector_read(digits_splits, tmp_path):
    """Random reads nothing; LESS reads the Adam-aware store; EL2N the proxy's predictions."""
    from curation.datastore import DatastoreSpec
    from curation.pool import load_pool
    from curation.proxies.classifier import ProxySpec, WarmupConfig
    from curation.selectors import SELECTORS, make_selector
    from curation.workflow import GradientSettings, run_selection

    pool, target = load_pool(digits_splits.pool), load_pool(digits_splits.target, role="target")
    settings = GradientSettings(ProxySpec("mlp", 32), WarmupConfig(fraction=0.1),
                                DatastoreSpec(dim=32, shard_size=128))
    lineages = {name: run_selection(pool, target, make_selector(name), 20, tmp_path / "work",
                                    settings)[1]
                for name in ("random", "less", "el2n", "gtp")}
    assert lineages["random"]["datastore_id"] is None
    assert lineages["random"]["proxy_checkpoints"] == []
    assert set(lineages["less"]["datastores"]) == {"adam"}
    assert set(lineages["gtp"]["datastores"]) == {"sgd"}
    assert lineages["less"]["datastore_id"] != lineages["gtp"]["datastore_id"]
    assert lineages["el2n"]["datastore_id"] is None
    assert len(lineages["el2n"]["proxy_checkpoints"]) == 4
    for name, lineage in lineages.items():
        assert lineage["pool_id"] == pool.content_hash and lineage["n_pool"] == 400
        assert lineage_problems(lineage, SELECTORS[name].needs) == [], name
