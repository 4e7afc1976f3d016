"""Shared pieces of the command line: consoles, the default home, one-line user errors, and the
option texts and parsers several commands use."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from curation.config import choice, config_fields, default_of
from curation.datastore import DatastoreSpec
from curation.errors import CurationError
from curation.io import check_output_dir
from curation.lm_bases import lm_base_help
from curation.proxies import PROXY_KINDS, proxy_help

console = Console()
errors = Console(stderr=True)


def default_home() -> Path:
    return Path(os.environ.get("CURATION_HOME", ".curation"))


def work_directory(work_dir: Path | None) -> Path:
    """``--work-dir``, else ``$CURATION_HOME/work``, checked as a writable directory."""
    if work_dir is not None:
        return check_output_dir(work_dir, "--work-dir")
    return check_output_dir(default_home() / "work", "work directory ($CURATION_HOME/work)")


Db = Annotated[Path | None, typer.Option(help="Catalog file ($CURATION_HOME/catalog.duckdb).")]


def default_catalog(db: Path | None) -> Path:
    return db or default_home() / "catalog.duckdb"


def open_catalog(db: Path | None):
    """The catalog at ``db`` (default ``$CURATION_HOME/catalog.duckdb``)."""
    from curation.catalog import Catalog

    return Catalog(default_catalog(db))


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


PROXY_HELP = proxy_help()
ProxyName = choice(PROXY_KINDS)
# The projection dimension is a datastore field: its default and text are declared there.
DEFAULT_DIM = default_of(DatastoreSpec, "dim")
DIM_HELP = config_fields(DatastoreSpec, ("dim",))["dim"].description
LM_BASE_HELP = lm_base_help()


def base_kinds() -> str:
    return " or ".join(k.name for k in PROXY_KINDS.values() if k.takes_base)


def parse_floats(text: str, option: str) -> list[float]:
    """Comma-separated finite numbers, at least one."""
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CurationError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise CurationError(f"{option} must name at least one number, got {text!r}")
    if not all(math.isfinite(v) for v in values):
        raise CurationError(f"{option} must be finite numbers, got {text!r}")
    return values


def parse_seed_count(text: str) -> list[int]:
    """``3`` means seeds 0, 1, 2; ``0,4,7`` means exactly those seeds."""
    seeds = parse_seeds(text)
    if len(seeds) == 1 and "," not in text:
        if seeds[0] < 1:
            raise CurationError(f"--seeds count must be at least 1, got {seeds[0]}")
        return list(range(seeds[0]))
    return seeds


def parse_seeds(text: str) -> list[int]:
    """Comma-separated non-negative integers, at least one (numpy seeds cannot be negative)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CurationError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise CurationError(f"--seeds must name at least one seed, got {text!r}")
    if any(s < 0 for s in seeds):
        raise CurationError(f"--seeds must be non-negative integers, got {text!r}")
    return seeds
