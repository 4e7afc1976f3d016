import multiprocessing as mp

import numpy as np
import pytest

from curation.catalog import Catalog
from curation.errors import CurationError
from curation.pool import features_table, validate_table
from curation.selectors import Selection


def _pool(n=6, offset=0):
    table = features_table([f"e{i}" for i in range(offset, offset + n)], np.eye(n, 3),
                           labels=np.arange(n) % 2, domain=["a", "b"] * (n // 2))
    return validate_table(table, source="test")


def _selection(pool, rows):
    rows = np.asarray(rows)
    return Selection(pool.ids[rows], rows, np.ones(len(rows)), np.arange(len(rows), 0, -1))


def _lineage(selector, pool, budget=0.5):
    return {"selector": selector, "config": {"selector": selector, "budget": budget},
            "config_hash": f"{selector}-{budget}", "pool_id": pool.content_hash,
            "datastore_id": "ds", "target_id": None}


def test_pool_selection_and_evaluation_join(tmp_path):
    catalog = Catalog(tmp_path / "c.duckdb")
    pool = _pool()
    catalog.record_pool(pool, "pool")
    catalog.record_pool(pool, "pool")  # re-recording the same content replaces, not duplicates
    a = catalog.record_selection(_selection(pool, [0, 1, 2]), _lineage("gtp", pool))
    b = catalog.record_selection(_selection(pool, [1, 2, 3]), _lineage("less", pool))
    catalog.record_evaluation(a, "test", [0.8, 0.9], [0, 1], 3)
    assert catalog.query("SELECT count(*) AS n FROM examples").column("n")[0].as_py() == 6
    overlap = catalog.query(
        "SELECT count(*) AS n FROM selection_members x JOIN selection_members y USING (id) "
        "WHERE x.selection_id = ? AND y.selection_id = ?", [a, b])
    assert overlap.column("n")[0].as_py() == 2
    mix = catalog.query(
        "SELECT e.domain, count(*) AS n FROM selection_members m JOIN examples e USING (id) "
        "WHERE m.selection_id = ? GROUP BY 1 ORDER BY 1", [a]).to_pylist()
    assert mix == [{"domain": "a", "n": 2}, {"domain": "b", "n": 1}]
    mean = catalog.query("SELECT avg(test_accuracy) AS m FROM evaluations WHERE selection_id = ?",
                         [a]).column("m")[0].as_py()
    assert mean == pytest.approx(0.85)


def test_bad_sql_and_missing_file_are_clear(tmp_path):
    with pytest.raises(CurationError, match="catalog not found"):
        Catalog(tmp_path / "none.duckdb").query("SELECT 1")
    catalog = Catalog(tmp_path / "c.duckdb")
    catalog.record_pool(_pool(), "pool")
    with pytest.raises(CurationError, match="catalog query failed"):
        catalog.query("SELECT * FROM no_such_table")


def _write_many(path: str, worker: int) -> None:
    catalog = Catalog(path, lock_timeout=60)
    for i in range(5):
        pool = _pool(4, offset=100 * worker + 10 * i)
        catalog.record_pool(pool, f"w{worker}")
        sid = catalog.record_selection(_selection(pool, [0, 1, 2]), _lineage("gtp", pool))
        catalog.record_evaluation(sid, "test", [0.5, 0.6], [0, 1], 3)


@pytest.mark.slow
def test_concurrent_writer_processes_lose_no_rows(tmp_path):
    path = str(tmp_path / "c.duckdb")
    Catalog(path).record_pool(_pool(2, offset=10_000), "seed")
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_write_many, args=(path, w)) for w in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    counts = Catalog(path).query(
        "SELECT (SELECT count(*) FROM examples) AS examples, "
        "(SELECT count(*) FROM selections) AS selections, "
        "(SELECT count(*) FROM selection_members) AS members, "
        "(SELECT count(*) FROM evaluations) AS evaluations").to_pylist()[0]
    assert counts == {"examples": 2 + 3 * 5 * 4, "selections": 15, "members": 15 * 3,
                      "evaluations": 15 * 2}


def test_configs_register_once_under_their_canonical_hash(tmp_path):
    from curation.lineage import config_hash

    catalog = Catalog(tmp_path / "c.duckdb")
    assert catalog.selector_configs() == []
    config = {"selector": "gtp", "feature_kind": "sgd", "tol": 1e-6, "budget": 0.05}
    key = catalog.register_config(config)
    assert key == config_hash(config)
    assert catalog.register_config({"budget": 5e-2, "tol": 0.000001, "feature_kind": "sgd",
                                    "selector": "gtp"}) == key
    assert [c["config_hash"] for c in catalog.selector_configs()] == [key]
    assert catalog.selector_config(key) == config
    with pytest.raises(CurationError, match="not registered"):
        catalog.selector_config("ffffffffffffffff")
    with pytest.raises(CurationError, match="missing 'budget'"):
        catalog.register_config({"selector": "gtp"})


def test_selection_files_load_in_bulk_and_canned_queries_answer(tmp_path):
    import pyarrow.parquet as pq

    catalog = Catalog(tmp_path / "c.duckdb")
    pool = _pool(8)
    catalog.record_pool(pool, "pool")
    a = catalog.record_selection(_selection(pool, [0, 1, 2, 3]), _lineage("gtp", pool))
    path = tmp_path / "less.parquet"
    pq.write_table(_selection(pool, [2, 3, 4]).to_table(), path)
    b = catalog.load_selection_file(path, _lineage("less", pool))
    assert catalog.selection(b[:6])["path"] == str(path.resolve())
    assert catalog.members("selection", b).column("id").to_pylist() == ["e2", "e3", "e4"]

    overlap = catalog.overlap(a, b[:5])
    assert {k: overlap[k] for k in ("n_a", "n_b", "intersection", "union_size", "only_a",
                                    "only_b")} == {"n_a": 4, "n_b": 3, "intersection": 2,
                                                   "union_size": 5, "only_a": 2, "only_b": 1}
    assert overlap["jaccard"] == pytest.approx(2 / 5)

    labels = catalog.mix(a, "label").to_pylist()
    assert [(r["label"], r["subset_n"], r["pool_n"]) for r in labels] == [("0", 2, 4), ("1", 2, 4)]
    assert labels[0]["subset_share"] == labels[0]["pool_share"] == pytest.approx(0.5)
    domains = catalog.mix(b, "domain").to_pylist()
    assert [(r["domain"], r["subset_n"]) for r in domains] == [("a", 2), ("b", 1)]
    assert domains[0]["ratio"] == pytest.approx((2 / 3) / 0.5)
    with pytest.raises(CurationError, match="mix 'by' must be one of"):
        catalog.mix(a, "id; DROP TABLE pools")
    with pytest.raises(CurationError, match="no selection 'zzz'"):
        catalog.overlap(a, "zzz")


def test_ambiguous_prefixes_are_refused(tmp_path):
    catalog = Catalog(tmp_path / "c.duckdb")
    pool = _pool(8)
    catalog.record_pool(pool, "pool")
    ids = sorted(catalog.record_selection(_selection(pool, [i]), _lineage(f"s{i}", pool))
                 for i in range(8))
    # These lineages hash to ids starting ee71..., f16c... and ff5e...: 'f' is ambiguous.
    assert [i[:2] for i in ids[-3:]] == ["ee", "f1", "ff"]
    with pytest.raises(CurationError, match="selection 'f' is ambiguous: f16c"):
        catalog.resolve("selection", "f")
    assert catalog.resolve("selection", "ff") == ids[-1]
    assert catalog.resolve("selection", ids[0]) == ids[0]


def test_an_old_catalog_file_gains_the_new_tables_and_columns(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE pools (pool_id VARCHAR PRIMARY KEY, role VARCHAR, source VARCHAR, "
                "n_rows BIGINT, input_column VARCHAR, created_at TIMESTAMP)")
    con.execute("CREATE TABLE selections (selection_id VARCHAR PRIMARY KEY, config_hash VARCHAR,"
                " selector VARCHAR, budget DOUBLE, k BIGINT, pool_id VARCHAR, "
                "datastore_id VARCHAR, lineage JSON, created_at TIMESTAMP)")
    con.execute("INSERT INTO pools VALUES ('old', 'pool', 'x', 1, 'features', now())")
    con.close()
    catalog = Catalog(path)
    pool = _pool()
    catalog.record_pool(pool, "pool", path=tmp_path / "pool.parquet")
    rows = catalog.query("SELECT pool_id, path FROM pools ORDER BY path NULLS FIRST").to_pylist()
    assert rows == [{"pool_id": "old", "path": None},
                    {"pool_id": pool.content_hash, "path": str(tmp_path / "pool.parquet")}]
    assert catalog.releases().num_rows == 0
