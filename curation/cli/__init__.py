"""The ``curation`` command line, one module per command group.

``data`` (demo-data), ``select`` (select, evaluate), ``benchmark``, ``distill``, ``dedup``,
``datastore`` (build, info, verify), ``catalog`` (canned queries, register-config, read-only SQL), ``release``
(create, list, show, checkout); ``common`` holds the pieces they share and ``options`` derives
options from the core's configs. Command modules never import this one, so there is no cycle.
Bad input exits with status 2 and one line naming it.
"""

from __future__ import annotations

import typer

from curation.cli import benchmark, data, dedup, distill, select
from curation.cli.catalog import catalog_app
from curation.cli.datastore import datastore_app
from curation.cli.release import release_app

app = typer.Typer(help="Gradient-based data curation: demo data, selection, evaluation, "
                       "catalog queries and versioned releases.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.command("demo-data")(data.demo_data)
app.command()(select.select)
app.command()(select.evaluate)
app.command()(benchmark.benchmark)
app.command()(distill.distill)
app.command()(dedup.dedup)
app.add_typer(catalog_app, name="catalog")
app.add_typer(datastore_app, name="datastore")
app.add_typer(release_app, name="release")


def main() -> None:
    app()
