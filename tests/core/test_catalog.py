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
        catalog.record_pool(_pool(4, offset=100 * worker + 10 * i), f"w{worker}")


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
    counts = Catalog(path).query("SELECT count(*) AS n FROM examples").column("n")[0].as_py()
    assert counts == 2 + 3 * 5 * 4
