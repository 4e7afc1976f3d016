"""The DuckDB metadata catalog: one database file for pools, subsets, evaluations and releases.

Tables: ``pools`` / ``examples`` (every split and its ids, labels, domains), ``datastores``,
``selector_configs`` (every config by canonical hash: the dynamic partitions of
``scored_subset``), ``selections`` / ``selection_members``, ``evaluations``,
``distilled_sets`` / ``distilled_members``, and ``releases`` / ``release_members`` /
``release_files``.

Concurrency: DuckDB lets one process write a file at a time. Every write here is one short
transaction on a fresh connection; a write (or read) that finds the file locked by another
process retries with jittered backoff for a bounded time (``lock_timeout``), then fails
naming the file. Rows are loaded in bulk by DuckDB from Arrow tables or Parquet files, never
inserted row by row.

User SQL (``user_query``, behind ``curation catalog query``) runs on a sandboxed connection:
the file opened read-only, DuckDB's external access off (no ``COPY ... TO``, ``EXPORT``,
``ATTACH``, ``read_csv``/``read_text``/``glob`` of other files, no extension install or load),
no spilling to a temp directory, the configuration locked so the SQL cannot undo any of it,
and a time limit after which the query is interrupted.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import duckdb
import pyarrow as pa

from curation.errors import CurationError
from curation.io import _json_default
from curation.lineage import config_hash, selection_id
from curation.pool import Pool

if TYPE_CHECKING:  # the selectors import torch; catalog commands should start fast
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
CREATE TABLE IF NOT EXISTS selector_configs (
    config_hash VARCHAR PRIMARY KEY, selector VARCHAR, budget DOUBLE, config JSON,
    registered_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS selections (
    selection_id VARCHAR PRIMARY KEY, config_hash VARCHAR, selector VARCHAR, budget DOUBLE,
    k BIGINT, pool_id VARCHAR, datastore_id VARCHAR, lineage JSON, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS selection_members (
    selection_id VARCHAR, id VARCHAR, weight FLOAT, score FLOAT, rank INTEGER);
CREATE TABLE IF NOT EXISTS evaluations (
    selection_id VARCHAR, split VARCHAR, seed INTEGER, test_accuracy DOUBLE, n_train BIGINT,
    created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS distilled_sets (
    distilled_id VARCHAR PRIMARY KEY, selection_id VARCHAR, method VARCHAR, n BIGINT,
    pool_id VARCHAR, lineage JSON, path VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS distilled_members (
    distilled_id VARCHAR, id VARCHAR, weight FLOAT, soft_label FLOAT[], rank INTEGER);
CREATE TABLE IF NOT EXISTS releases (
    version VARCHAR PRIMARY KEY, source_kind VARCHAR, source_id VARCHAR, config_hash VARCHAR,
    selector VARCHAR, pool_id VARCHAR, n_rows BIGINT, directory VARCHAR, dvc_file VARCHAR,
    dvc_md5 VARCHAR, dvc_text VARCHAR, remote VARCHAR, remote_url VARCHAR, lineage JSON,
    created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS release_members (version VARCHAR, id VARCHAR, rank INTEGER);
CREATE TABLE IF NOT EXISTS release_files (
    version VARCHAR, relpath VARCHAR, size BIGINT, md5 VARCHAR, sha256 VARCHAR);
ALTER TABLE pools ADD COLUMN IF NOT EXISTS path VARCHAR;
ALTER TABLE selections ADD COLUMN IF NOT EXISTS path VARCHAR;
"""

MIX_COLUMNS = ("label", "domain")
QUERY_TIMEOUT = 60.0  # seconds a user query may run (``curation catalog query --timeout``)
# What user SQL may not do: touch any file but the catalog, load code, or change these.
SANDBOX = {"enable_external_access": False, "autoload_known_extensions": False,
           "autoinstall_known_extensions": False, "allow_community_extensions": False,
           "temp_directory": "", "lock_configuration": True}


class Catalog:
    """A DuckDB catalog file; every method opens, uses and closes its own connection."""

    def __init__(self, path: str | Path, lock_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout

    # -- connections ---------------------------------------------------------------------

    @contextmanager
    def connect(self, read_only: bool = False,
                sandbox: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the file; ``sandbox`` (read-only) locks user SQL in (``SANDBOX``)."""
        read_only = read_only or sandbox
        if read_only and not self.path.exists():
            raise CurationError(f"catalog not found: {self.path}")
        if self.path.is_dir():
            raise CurationError(f"{self.path} is a directory, not a DuckDB catalog file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        config = SANDBOX if sandbox else {}
        con = self._retry(lambda: duckdb.connect(str(self.path), read_only=read_only,
                                                 config=config))
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
                if "not a valid DuckDB database file" in str(exc):
                    raise CurationError(f"{self.path} is not a DuckDB catalog (the file exists "
                                        "but is not a DuckDB database); check --db") from None
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise CurationError(f"catalog {self.path} is busy or unreadable: {exc}") from exc
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)

    def _write(self, statements: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                result = statements(con)
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            return result

    # -- writes --------------------------------------------------------------------------

    def record_pool(self, pool: Pool, role: str, path: str | Path | None = None) -> str:
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
            con.execute("INSERT INTO pools (pool_id, role, source, n_rows, input_column, "
                        "created_at, path) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [pool.content_hash, role, pool.source, n, pool.input_column, _now(),
                         None if path is None else str(Path(path).resolve())])
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

    def register_config(self, config: dict) -> str:
        """Register a selector config (``selector``, ``budget``, parameters) under its
        canonical hash; registering it again changes nothing. Returns the hash."""
        from curation.selectors.base import resolve_budget  # torch: only where needed

        for key in ("selector", "budget"):
            if key not in config:
                raise CurationError(f"selector config {config} is missing {key!r}")
        try:
            # Any pool size: only whether the budget is a fraction below 1 or a whole count.
            resolve_budget(float(config["budget"]), sys.maxsize)
        except (TypeError, ValueError):
            raise CurationError(f"selector config 'budget' must be a number, got "
                                f"{config['budget']!r}") from None
        except CurationError as exc:
            raise CurationError(f"selector config {exc}") from None
        key = config_hash(config)

        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("INSERT OR IGNORE INTO selector_configs VALUES (?, ?, ?, ?, ?)",
                        [key, config["selector"], float(config["budget"]),
                         _dumps(config), _now()])

        self._write(write)
        return key

    def record_selection(self, selection: Selection, lineage: dict,
                         path: str | Path | None = None) -> str:
        """Store a selection and its members; returns its id (stable for the same lineage)."""
        members = selection.to_table()
        return self._record_selection(lineage, path, lambda con: con.register("members", members))

    def record_selection_file(self, path: str | Path, lineage: dict, pool: Pool,
                              pool_path: str | Path) -> str:
        """Record a selection file written beside its lineage (what ``curation select``
        writes) and its pool with the pool's file, so a release can find the pool later."""
        self.record_pool(pool, "pool", path=pool_path)
        return self.load_selection_file(path, lineage)

    def load_selection_file(self, path: str | Path, lineage: dict) -> str:
        """Record a selection Parquet file (``id, weight, score, rank``) read by DuckDB."""
        path = Path(path).resolve()
        if not path.exists():
            raise CurationError(f"selection file not found: {path}")

        def register(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("CREATE TEMP VIEW members AS SELECT id, weight, score, rank "
                        f"FROM read_parquet({_sql_string(path)})")

        return self._record_selection(lineage, path, register)

    def _record_selection(self, lineage: dict, path: str | Path | None,
                          register: Callable[[duckdb.DuckDBPyConnection], None]) -> str:
        sid = selection_id(lineage)

        def write(con: duckdb.DuckDBPyConnection) -> None:
            register(con)
            con.execute("DELETE FROM selection_members WHERE selection_id = ?", [sid])
            con.execute("DELETE FROM selections WHERE selection_id = ?", [sid])
            con.execute(
                "INSERT INTO selections (selection_id, config_hash, selector, budget, k, pool_id,"
                " datastore_id, lineage, created_at, path) "
                "VALUES (?, ?, ?, ?, (SELECT count(*) FROM members), ?, ?, ?, ?, ?)",
                [sid, lineage["config_hash"], lineage["selector"], lineage["config"]["budget"],
                 lineage["pool_id"], lineage["datastore_id"], _dumps(lineage),
                 _now(), None if path is None else str(Path(path).resolve())])
            con.execute("INSERT INTO selection_members SELECT ?, id, weight, score, rank "
                        "FROM members", [sid])

        self._write(write)
        return sid

    def record_evaluation(self, selection_id: str, split: str, accuracies: list[float],
                          seeds: list[int], n_train: int) -> None:
        if len(accuracies) != len(seeds):
            raise CurationError(f"{len(accuracies)} accuracies for {len(seeds)} seeds")
        rows = pa.table({
            "selection_id": pa.array([selection_id] * len(seeds), pa.string()),
            "split": pa.array([split] * len(seeds), pa.string()),
            "seed": pa.array(seeds, pa.int32()),
            "test_accuracy": pa.array(accuracies, pa.float64()),
            "n_train": pa.array([n_train] * len(seeds), pa.int64()),
            "created_at": pa.array([_now()] * len(seeds), pa.timestamp("us"))})

        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM evaluations WHERE selection_id = ? AND split = ?",
                        [selection_id, split])
            con.register("new_rows", rows)
            con.execute("INSERT INTO evaluations SELECT * FROM new_rows")

        self._write(write)

    def record_distilled_set(self, distilled_id: str, path: str | Path, lineage: dict,
                             selection_id: str | None = None) -> str:
        """Record a distilled set written by ``curation.distill`` (``id, features, label,
        soft_label, source_id``): its rows are read by DuckDB from the Parquet file; the
        members are the pool examples the rows came from (``source_id``), in file order."""
        path = Path(path).resolve()
        if not path.exists():
            raise CurationError(f"distilled set not found: {path}")
        import pyarrow.parquet as pq

        columns = pq.read_schema(path).names
        missing = [c for c in ("id", "label", "soft_label", "source_id") if c not in columns]
        if missing:
            raise CurationError(f"{path}: not a distilled set, missing columns {missing}")
        if not lineage.get("pool_id"):
            raise CurationError(f"distilled set {distilled_id}: lineage names no 'pool_id'")

        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM distilled_members WHERE distilled_id = ?", [distilled_id])
            con.execute("DELETE FROM distilled_sets WHERE distilled_id = ?", [distilled_id])
            con.execute(
                "INSERT INTO distilled_members SELECT ?, source_id, 1.0, "
                "CAST(soft_label AS FLOAT[]), CAST(file_row_number AS INTEGER) "
                f"FROM read_parquet({_sql_string(path)}, file_row_number = true)",
                [distilled_id])
            con.execute(
                "INSERT INTO distilled_sets VALUES (?, ?, ?, (SELECT count(*) FROM "
                "distilled_members WHERE distilled_id = ?), ?, ?, ?, ?)",
                [distilled_id, selection_id,
                 lineage.get("method") or (lineage.get("config") or {}).get("method"),
                 distilled_id,
                 lineage["pool_id"], _dumps(lineage), str(path), _now()])

        self._write(write)
        return distilled_id

    def record_release(self, record: dict, members: pa.Table, files: pa.Table) -> None:
        """Record a published release, its members (pool ``id`` and ``rank``) and files.

        The version is the primary key, so a second release under the same version fails.
        """
        version = record["version"]
        columns = ("version", "source_kind", "source_id", "config_hash", "selector", "pool_id",
                   "n_rows", "directory", "dvc_file", "dvc_md5", "dvc_text", "remote",
                   "remote_url", "lineage", "created_at")
        values = [_dumps(record[c]) if c == "lineage" else record[c] for c in columns]

        def write(con: duckdb.DuckDBPyConnection) -> None:
            if con.execute("SELECT 1 FROM releases WHERE version = ?", [version]).fetchone():
                raise CurationError(f"release {version!r} already exists in {self.path}; "
                                    "versions are immutable, choose a new one")
            con.execute(f"INSERT INTO releases ({', '.join(columns)}) VALUES "
                        f"({', '.join('?' * len(columns))})", values)
            con.register("new_members", members)
            con.execute("INSERT INTO release_members SELECT ?, id, rank FROM new_members",
                        [version])
            con.register("new_files", files)
            con.execute("INSERT INTO release_files SELECT ?, relpath, size, md5, sha256 "
                        "FROM new_files", [version])

        self._write(write)

    # -- reads ---------------------------------------------------------------------------

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        """Run read-only SQL and return an Arrow table; SQL errors become one clear line."""
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

    def user_query(self, sql: str, timeout: float = QUERY_TIMEOUT) -> pa.Table:
        """Run a user's SQL in the sandbox (``SANDBOX``, read-only) for at most ``timeout``
        seconds; anything refused, failing or too slow becomes one line."""
        if not timeout > 0:
            raise CurationError(f"query timeout must be > 0 seconds, got {timeout}")
        with self.connect(sandbox=True) as con:
            timer = threading.Timer(timeout, con.interrupt)
            timer.start()
            try:
                relation = con.sql(sql)
                if relation is None:
                    raise CurationError("catalog query returned no rows to show (use a SELECT)")
                return relation.to_arrow_table()
            except duckdb.InterruptException:
                raise CurationError(f"catalog query stopped after its time limit of {timeout:g} s"
                                    " (--timeout); narrow it or allow more time") from None
            except duckdb.PermissionException as exc:
                raise CurationError(f"catalog query refused: {_first_line(exc)} (queries may "
                                    "read only the catalog's own tables)") from None
            except duckdb.Error as exc:
                raise CurationError(f"catalog query failed: {_first_line(exc)}") from None
            finally:
                timer.cancel()

    def _rows(self, sql: str, params: list | None = None) -> list[dict]:
        return self.query(sql, params).to_pylist()

    def selector_configs(self) -> list[dict]:
        """Registered selector configs, oldest first: ``config_hash``, ``selector``,
        ``budget``, ``config`` (a dict)."""
        if not self.path.exists():
            return []
        rows = self._rows("SELECT config_hash, selector, budget, config FROM selector_configs "
                          "ORDER BY registered_at, config_hash")
        return [{**r, "config": json.loads(r["config"])} for r in rows]

    def selector_config(self, key: str) -> dict:
        """The config registered under hash ``key``."""
        rows = self._rows("SELECT config FROM selector_configs WHERE config_hash = ?", [key]) \
            if self.path.exists() else []
        if not rows:
            raise CurationError(
                f"selector config {key!r} is not registered in {self.path}; register it with "
                "`curation catalog register-config` or by running scored_subsets")
        return json.loads(rows[0]["config"])

    def resolve(self, kind: str, ref: str) -> str:
        """The full id of a selection / distilled set / release from an id or unique prefix."""
        table, column = {"selection": ("selections", "selection_id"),
                         "distilled": ("distilled_sets", "distilled_id"),
                         "release": ("releases", "version")}[kind]
        if not self.path.exists():
            raise CurationError(f"catalog not found: {self.path}")
        rows = self._rows(f"SELECT {column} AS id FROM {table} WHERE {column} = ? "
                          f"UNION SELECT {column} FROM {table} WHERE starts_with({column}, ?) "
                          "ORDER BY 1", [ref, ref])
        exact = [r["id"] for r in rows if r["id"] == ref]
        if exact:
            return exact[0]
        if len(rows) == 1:
            return rows[0]["id"]
        if not rows:
            raise CurationError(f"no {kind} {ref!r} in the catalog {self.path}")
        raise CurationError(f"{kind} {ref!r} is ambiguous: "
                            f"{', '.join(r['id'] for r in rows[:5])}")

    def selection(self, ref: str) -> dict:
        """A selection's catalog row (``lineage`` parsed) by id or unique prefix."""
        sid = self.resolve("selection", ref)
        row = self._rows("SELECT * FROM selections WHERE selection_id = ?", [sid])[0]
        return {**row, "lineage": json.loads(row["lineage"])}

    def members(self, kind: str, source_id: str) -> pa.Table:
        """Members of a selection (``id, weight, score, rank``) or a distilled set (the pool
        ``id`` each row came from, ``weight``, ``soft_label``, ``rank``), in rank order."""
        if kind == "selection":
            return self.query("SELECT id, weight, score, rank FROM selection_members "
                              "WHERE selection_id = ? ORDER BY rank", [source_id])
        return self.query("SELECT id, weight, soft_label, rank FROM distilled_members "
                          "WHERE distilled_id = ? ORDER BY rank", [source_id])

    def distilled_set(self, ref: str) -> dict:
        did = self.resolve("distilled", ref)
        row = self._rows("SELECT * FROM distilled_sets WHERE distilled_id = ?", [did])[0]
        return {**row, "lineage": json.loads(row["lineage"])}

    def pool(self, pool_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM pools WHERE pool_id = ?", [pool_id])
        return rows[0] if rows else None

    def evaluations(self, selection_id: str) -> list[dict]:
        """Accuracy per split over seeds: ``split, seeds, mean, std, n_train``."""
        return self._rows(
            "SELECT split, count(*) AS seeds, avg(test_accuracy) AS mean, "
            "coalesce(stddev_pop(test_accuracy), 0) AS std, max(n_train) AS n_train "
            "FROM evaluations WHERE selection_id = ? GROUP BY split ORDER BY split",
            [selection_id])

    def release(self, version: str) -> dict:
        """A release's catalog row with its files; an unknown version lists the known ones."""
        rows = self._rows("SELECT * FROM releases WHERE version = ?", [version]) \
            if self.path.exists() else []
        if not rows:
            known = [r["version"] for r in self.releases().to_pylist()] if self.path.exists() \
                else []
            raise CurationError(f"no release {version!r} in {self.path}; known: {known or 'none'}")
        files = self._rows("SELECT relpath, size, md5, sha256 FROM release_files "
                           "WHERE version = ? ORDER BY relpath", [version])
        return {**rows[0], "lineage": json.loads(rows[0]["lineage"]), "files": files}

    def releases(self) -> pa.Table:
        return self.query("SELECT version, source_kind, source_id, selector, config_hash, "
                          "n_rows, remote, dvc_md5, created_at FROM releases ORDER BY created_at")

    # -- canned queries ------------------------------------------------------------------

    def releases_containing(self, example_id: str) -> pa.Table:
        """Every release holding ``example_id``, with its rank there."""
        return self.query(
            "SELECT r.version, r.source_kind, r.source_id, r.selector, r.config_hash, "
            "m.rank, r.created_at FROM release_members m JOIN releases r USING (version) "
            "WHERE m.id = ? ORDER BY r.created_at, r.version", [example_id])

    def overlap(self, a: str, b: str) -> dict:
        """Sizes, intersection, union and Jaccard index of two selections (ids or prefixes)."""
        a, b = self.resolve("selection", a), self.resolve("selection", b)
        row = self._rows(
            "WITH x AS (SELECT DISTINCT id FROM selection_members WHERE selection_id = ?), "
            "y AS (SELECT DISTINCT id FROM selection_members WHERE selection_id = ?) "
            "SELECT (SELECT count(*) FROM x) AS n_a, (SELECT count(*) FROM y) AS n_b, "
            "(SELECT count(*) FROM x JOIN y USING (id)) AS intersection, "
            "(SELECT count(*) FROM (SELECT id FROM x UNION SELECT id FROM y)) AS union_size",
            [a, b])[0]
        jaccard = row["intersection"] / row["union_size"] if row["union_size"] else 0.0
        return {"a": a, "b": b, **row, "only_a": row["n_a"] - row["intersection"],
                "only_b": row["n_b"] - row["intersection"], "jaccard": jaccard}

    def mix(self, ref: str, by: str = "label") -> pa.Table:
        """Counts and shares of each label (or domain) in a selection next to its pool, and
        the ratio of the two shares (>1: over-represented in the subset)."""
        if by not in MIX_COLUMNS:
            raise CurationError(f"mix 'by' must be one of {MIX_COLUMNS}, got {by!r}")
        sid = self.resolve("selection", ref)
        return self.query(
            f"""
            WITH s AS (SELECT pool_id FROM selections WHERE selection_id = $sid),
            pool AS (
                SELECT CAST(e.{by} AS VARCHAR) AS value, count(*) AS pool_n
                FROM examples e WHERE e.pool_id = (SELECT pool_id FROM s) GROUP BY 1),
            sub AS (
                SELECT CAST(e.{by} AS VARCHAR) AS value, count(*) AS subset_n
                FROM selection_members m
                JOIN examples e ON e.id = m.id AND e.pool_id = (SELECT pool_id FROM s)
                WHERE m.selection_id = $sid GROUP BY 1)
            SELECT value AS {by}, coalesce(subset_n, 0) AS subset_n,
                   coalesce(subset_n, 0) / sum(coalesce(subset_n, 0)) OVER () AS subset_share,
                   coalesce(pool_n, 0) AS pool_n,
                   coalesce(pool_n, 0) / sum(coalesce(pool_n, 0)) OVER () AS pool_share,
                   (coalesce(subset_n, 0) / sum(coalesce(subset_n, 0)) OVER ())
                     / nullif(coalesce(pool_n, 0) / sum(coalesce(pool_n, 0)) OVER (), 0)
                     AS ratio
            FROM pool FULL OUTER JOIN sub USING (value)
            ORDER BY TRY_CAST(value AS BIGINT) NULLS LAST, value
            """, {"sid": sid})


def _first_line(exc: Exception) -> str:
    """DuckDB's message without its candidate lists and hints (one line)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=_json_default)


def _sql_string(path: Path) -> str:
    """A path as a SQL string literal (table functions take no bound parameters here)."""
    return "'" + str(path).replace("'", "''") + "'"
