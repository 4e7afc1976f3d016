"""``curation catalog ...``: canned queries, config registration and read-only SQL."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from curation.catalog import QUERY_TIMEOUT
from curation.cli.common import Db, console, open_catalog, print_table, user_errors
from curation.cli.options import PARAM_HELP, parse_params
from curation.errors import CurationError

catalog_app = typer.Typer(help="Query the DuckDB metadata catalog.", no_args_is_help=True)


@catalog_app.command("selections")
def selections(db: Db = None) -> None:
    """List every subset: id, selector, budget, size, config hash."""
    with user_errors():
        rows = open_catalog(db).query(
            "SELECT selection_id, selector, budget, k, config_hash, left(pool_id, 12) AS pool, "
            "created_at FROM selections ORDER BY created_at, selection_id")
    print_table(rows)


@catalog_app.command("configs")
def configs(db: Db = None) -> None:
    """List registered selector configs (the partitions of scored_subset)."""
    with user_errors():
        rows = open_catalog(db).selector_configs()
    print_table([{**r, "config": json.dumps(r["config"], sort_keys=True)} for r in rows])


@catalog_app.command("register-config")
def register_config(
    selector: Annotated[str, typer.Argument(help="Selector: random, less, el2n, gtp.")],
    budget: Annotated[float, typer.Option(help="Fraction of the pool (<1) or a count.")],
    param: Annotated[list[str] | None, typer.Option(help=PARAM_HELP)] = None,
    db: Db = None,
) -> None:
    """Register a selector config; the subsets sensor then materializes scored_subset for it."""
    from curation.selection import selection_config
    from curation.selectors import make_selector

    with user_errors():
        if not budget > 0:
            raise CurationError(f"--budget must be > 0 (a fraction below 1 or a whole count), "
                                f"got {budget}")
        config = selection_config(make_selector(selector, **parse_params(param)), budget)
        key = open_catalog(db).register_config(config)
    console.print(f"config {key}: {json.dumps(config, sort_keys=True)}")


@catalog_app.command("releases-with")
def releases_with(
    example_id: Annotated[str, typer.Argument(help="An example id of the pool.")],
    db: Db = None,
) -> None:
    """Every release that contains EXAMPLE_ID, and its rank there."""
    with user_errors():
        rows = open_catalog(db).releases_containing(example_id)
    print_table(rows)


@catalog_app.command("overlap")
def overlap(
    a: Annotated[str, typer.Argument(help="Selection id (or unique prefix).")],
    b: Annotated[str, typer.Argument(help="Selection id (or unique prefix).")],
    db: Db = None,
) -> None:
    """Overlap of two subsets: sizes, intersection, union and Jaccard index."""
    with user_errors():
        row = open_catalog(db).overlap(a, b)
    print_table([{"field": k, "value": v} for k, v in row.items()])


@catalog_app.command("mix")
def mix(
    selection: Annotated[str, typer.Argument(help="Selection id (or unique prefix).")],
    by: Annotated[str, typer.Option(help="label or domain.")] = "label",
    db: Db = None,
) -> None:
    """Label (or domain) mix of a subset next to its pool."""
    with user_errors():
        rows = open_catalog(db).mix(selection, by)
    print_table(rows)


@catalog_app.command("query")
def catalog_query(
    sql: Annotated[str, typer.Argument(help="Read-only SQL over the catalog tables.")],
    timeout: Annotated[float, typer.Option(
        help="Seconds the query may run before it is stopped.")] = QUERY_TIMEOUT,
    db: Db = None,
) -> None:
    """Run SQL against the catalog and print the result as a table.

    The SQL runs sandboxed: the catalog is opened read-only, DuckDB's access to any other
    file, the network and extensions is off (COPY ... TO, EXPORT DATABASE, ATTACH, read_csv,
    read_text, glob, INSTALL and LOAD are refused), the settings are locked so the SQL cannot
    turn that back on, and a query running longer than --timeout seconds is stopped.
    """
    with user_errors():
        result = open_catalog(db).user_query(sql, timeout)
    table = Table(*result.column_names)
    for row in result.to_pylist():
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)

