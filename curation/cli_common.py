"""Shared pieces of the command line: consoles, the default home, one-line user errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from curation.errors import CurationError

console = Console()
errors = Console(stderr=True)


def default_home() -> Path:
    return Path(os.environ.get("CURATION_HOME", ".curation"))


def default_catalog(db: Path | None) -> Path:
    return db or default_home() / "catalog.duckdb"


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except CurationError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def print_table(rows: pa.Table | list[dict], title: str | None = None) -> None:
    """Arrow table or list of dicts as a rich table on stdout."""
    rows = rows.to_pylist() if isinstance(rows, pa.Table) else rows
    if not rows:
        console.print("(no rows)")
        return
    table = Table(*rows[0].keys(), title=title)
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    console.print(table)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
