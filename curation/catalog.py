"""The DuckDB metadata catalog: one database file for pools, selections and evaluations.

Bulk rows are loaded from Arrow tables by DuckDB itself (never row-by-row inserts). Each
write is one short transaction on a fresh connection; DuckDB allows one writing process per
file, so a write that finds the file locked retries with backoff for a bounded time.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from curation.errors import CurationError
from curation.pool import Pool
from curation.selectors import Selection

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (
    pool_id VARCHAR PRIMARY KEY, role VARCHAR, source VARCHAR, n_rows BIGINT,
    input_column VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS examples (
    pool_id VARCHAR, id VARCHAR, label BIGINT, domain VARCHAR);
CREATE TABLE IF NOT EXISTS datastores (
    datastore_id VARCHAR PRIMARY KEY, pool_id VARCHAR, feature_kind VARCHAR, n BIGINT,
    checkpoints INTEGER, dim INTEGER, dtype VARCHAR, directory VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS selections (
    selection_id VARCHAR PRIMARY KEY, config_hash VARCHAR, selector VARCHAR, budget DOUBLE,
    k BIGINT, pool_id VARCHAR, datastore_id VARCHAR, lineage JSON, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS selection_members (
    selection_id VARCHAR, id VARCHAR, weight FLOAT, score FLOAT, rank INTEGER);
CREATE TABLE IF NOT EXISTS evaluations (
    selection_id VARCHAR, split VARCHAR, seed INTEGER, test_accuracy DOUBLE, n_train BIGINT,
    created_at TIMESTAMP);
"""


class Catalog:
    """A DuckDB catalog file; every method opens, uses and closes its own connection."""

    def __init__(self, path: str | Path, lock_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._retry(lambda: duckdb.connect(str(self.path), read_only=read_only))
        try:
            if not read_only:
                con.execute(SCHEMA)
            yield con
        finally:
            con.close()

    def _retry(self, open_: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        while True:
            try:
                return open_()
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise CurationError(f"catalog {self.path} is busy or unreadable: {exc}") from exc
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)

    def _write(self, statements: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                statements(con)
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise

    def record_pool(self, pool: Pool, role: str) -> str:
        """Register a pool and its examples (replacing an earlier copy of the same content)."""
        n = len(pool)
        domain = (pool.table.column("domain").cast(pa.string()) if "domain" in pool.table.column_names
                  else pa.nulls(n, pa.string()))
        label = pool.table.column("label") if pool.has_labels else pa.nulls(n, pa.int64())
        examples = pa.table({"pool_id": pa.array([pool.content_hash] * n, pa.string()),
                             "id": pool.table.column("id"), "label": label.cast(pa.int64()),
                             "domain": domain})

        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM examples WHERE pool_id = ?", [pool.content_hash])
            con.execute("DELETE FROM pools WHERE pool_id = ?", [pool.content_hash])
            con.execute("INSERT INTO pools VALUES (?, ?, ?, ?, ?, ?)",
                        [pool.content_hash, role, pool.source, n, pool.input_column, _now()])
            con.register("new_examples", examples)
            con.execute("INSERT INTO examples SELECT * FROM new_examples")

        self._write(write)
        return pool.content_hash

    def record_datastore(self, manifest: dict, directory: str) -> None:
        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM datastores WHERE datastore_id = ?", [manifest["datastore_id"]])
            con.execute(
                "INSERT INTO datastores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [manifest["datastore_id"], manifest["pool_id"], manifest["feature_kind"],
                 manifest["n"], len(manifest["proxy_checkpoints"]), manifest["dim"],
                 manifest["dtype"], directory, _now()])

        self._write(write)

    def record_selection(self, selection: Selection, lineage: dict) -> str:
        """Store a selection and its members; returns its id (stable for the same lineage)."""
        from curation.lineage import config_hash

        selection_id = config_hash({k: lineage.get(k) for k in
                                    ("config_hash", "pool_id", "datastore_id", "target_id")})
        members = selection.to_table()
        members = members.add_column(0, "selection_id",
                                     pa.array([selection_id] * len(selection), pa.string()))

        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM selection_members WHERE selection_id = ?", [selection_id])
            con.execute("DELETE FROM selections WHERE selection_id = ?", [selection_id])
            con.execute(
                "INSERT INTO selections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [selection_id, lineage["config_hash"], lineage["selector"],
                 lineage["config"]["budget"], len(selection), lineage["pool_id"],
                 lineage["datastore_id"], json.dumps(lineage, sort_keys=True), _now()])
            con.register("new_members", members)
            con.execute("INSERT INTO selection_members SELECT * FROM new_members")

        self._write(write)
        return selection_id

    def record_evaluation(self, selection_id: str, split: str, accuracies: list[float],
                          seeds: list[int], n_train: int) -> None:
        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM evaluations WHERE selection_id = ? AND split = ?",
                        [selection_id, split])
            for seed, acc in zip(seeds, accuracies, strict=True):
                con.execute("INSERT INTO evaluations VALUES (?, ?, ?, ?, ?, ?)",
                            [selection_id, split, seed, acc, n_train, _now()])

        self._write(write)

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        """Run read-only SQL and return an Arrow table; SQL errors become one clear line."""
        if not self.path.exists():
            raise CurationError(f"catalog not found: {self.path}")
        with self.connect(read_only=True) as con:
            try:
                relation = con.sql(sql, params=params or None)
            except duckdb.Error as exc:
                raise CurationError(f"catalog query failed: {exc}") from exc
            if relation is None:
                raise CurationError("catalog query returned no rows to show (use a SELECT)")
            try:
                return relation.to_arrow_table()
            except duckdb.Error as exc:
                raise CurationError(f"catalog query failed: {exc}") from exc


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
