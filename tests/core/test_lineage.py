import pytest

from curation.lineage import canonical_json, code_version, config_hash, selection_lineage


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
