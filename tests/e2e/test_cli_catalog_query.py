"""``curation catalog query SQL`` on a real catalog file: it answers SELECTs and refuses writes."""

import hashlib
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.catalog import Catalog
from curation.cli import app
from curation.release import register_selection_file


@pytest.fixture
def catalog_file(home, digits_splits) -> tuple[Path, str, Path]:
    """$CURATION_HOME/catalog.duckdb holding one 40-row random selection of the digits pool,
    recorded the way `curation release create` records a selection file."""
    selection = home / "random.parquet"
    result = CliRunner().invoke(app, ["select", "--pool", str(digits_splits.pool), "--method",
                                      "random", "--budget", "40", "--out", str(selection)])
    assert result.exit_code == 0, result.output
    path = home / "curation_home" / "catalog.duckdb"
    selection_id = register_selection_file(Catalog(path), selection, digits_splits.pool)
    return path, selection_id, selection


def _query(sql: str):
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, ["catalog", "query", sql])


def _rows(output: str) -> list[list[str]]:
    """The body rows of a rich table, cell by cell."""
    return [[cell.strip() for cell in line.strip("│").split("│")]
            for line in output.splitlines() if line.startswith("│")]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_select_prints_the_catalog_rows(catalog_file):
    _, selection_id, selection = catalog_file
    result = _query("SELECT selection_id, selector, k FROM selections")
    assert result.exit_code == 0, result.output
    assert _rows(result.stdout) == [[selection_id, "random", "40"]]

    ranked = pq.read_table(selection).sort_by("rank")
    result = _query(f"SELECT id, rank FROM selection_members WHERE selection_id = '{selection_id}' "
                    "ORDER BY rank LIMIT 3")
    assert result.exit_code == 0, result.output
    assert _rows(result.stdout) == [[i, str(r)] for i, r in zip(
        ranked.column("id").to_pylist()[:3], ranked.column("rank").to_pylist()[:3], strict=True)]


@pytest.mark.parametrize("sql, statement", [
    ("DROP TABLE selections", "DROP"),
    ("INSERT INTO selections (selection_id) VALUES ('x')", "INSERT"),
    ("DELETE FROM selection_members", "DELETE"),
    ("UPDATE selections SET k = 0", "UPDATE"),
    ("CREATE TABLE backup AS SELECT * FROM selections", "CREATE"),
    ("SELECT 1; DROP TABLE selections", "DROP"),  # a write hidden behind a read
])
def test_a_write_is_refused_in_one_line_and_leaves_the_catalog_intact(catalog_file, sql,
                                                                      statement):
    path, _, _ = catalog_file
    before = _sha256(path)
    result = _query(sql)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: catalog query failed") and "read-only" in lines[0]
    assert f'"{statement}"' in lines[0] and result.stdout == ""
    assert _sha256(path) == before
    counts = _query("SELECT (SELECT count(*) FROM selections) AS s, "
                    "(SELECT count(*) FROM selection_members) AS m")
    assert _rows(counts.stdout) == [["1", "40"]]


SANDBOXED = [
    "COPY selections TO '{out}'",
    "COPY (SELECT * FROM selection_members) TO '{out}' (FORMAT parquet)",
    "EXPORT DATABASE '{out}'",
    "COPY selections TO '{catalog}'",  # onto the catalog itself
    "ATTACH '{out}' AS other",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('/root/*')",
    "SELECT * FROM read_parquet('{selection}')",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
]


def test_the_query_sandbox_refuses_files_extensions_and_settings(catalog_file, tmp_path):
    """One catalog for every statement (each would need its own select otherwise)."""
    path, _, selection = catalog_file
    before = _sha256(path)
    out = tmp_path / "dump"
    for sql in SANDBOXED:
        result = _query(sql.format(out=out, catalog=path, selection=selection))
        assert result.exit_code == 2, (sql, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: catalog query"), (sql, lines)
        assert result.stdout == "", sql
        assert not out.exists() and _sha256(path) == before, sql
        assert sorted(p.name for p in path.parent.iterdir()) == ["catalog.duckdb", "work"], sql


def test_a_query_past_its_time_limit_stops_in_one_line(catalog_file):
    started = time.monotonic()
    result = CliRunner().invoke(app, ["catalog", "query", "--timeout", "0.5",
                                      "SELECT count(*) FROM range(10000000000000)"])
    assert time.monotonic() - started < 20
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: catalog query stopped after its time limit of "
                                     "0.5 s (--timeout); narrow it or allow more time")
    assert "--timeout" in CliRunner().invoke(app, ["catalog", "query", "--help"]).stdout


def test_a_db_that_is_not_duckdb_is_named_in_one_line(tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_text("not a database\n" * 100)
    for args in (["catalog", "selections"], ["catalog", "query", "SELECT 1"],
                 ["catalog", "register-config", "random", "--budget", "0.1"]):
        result = CliRunner().invoke(app, [*args, "--db", str(junk)])
        assert result.exit_code == 2
        assert result.stderr.strip() == (f"error: {junk} is not a DuckDB catalog (the file exists "
                                         "but is not a DuckDB database); check --db")
    assert junk.read_text() == "not a database\n" * 100


@pytest.mark.parametrize("budget, message", [
    ("1.5", "budget 1.5 >= 1 must be a whole count"), ("nan", "--budget must be > 0"),
    ("inf", "budget must be > 0"), ("0", "--budget must be > 0")])
def test_register_config_refuses_budgets_that_are_no_fraction_or_count(home, budget, message):
    result = CliRunner().invoke(app, ["catalog", "register-config", "random", "--budget", budget])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (home / "curation_home" / "catalog.duckdb").exists()
