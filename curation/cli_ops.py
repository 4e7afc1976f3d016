"""Catalog and release commands: ``curation catalog ...`` and ``curation release ...``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from curation.cli_common import console, default_catalog, print_table, user_errors
from curation.errors import CurationError

release_app = typer.Typer(
    help="Immutable, DVC-versioned dataset releases of a subset (Parquet + lineage + card).",
    no_args_is_help=True)

Db = Annotated[Path | None, typer.Option(help="Catalog file ($CURATION_HOME/catalog.duckdb).")]
Repo = Annotated[Path, typer.Option(help="A directory inside the DVC repository.")]


def _catalog(db: Path | None):
    from curation.catalog import Catalog

    return Catalog(default_catalog(db))


def register_catalog_commands(catalog_app: typer.Typer) -> None:
    """Add the canned queries and config registration to ``curation catalog``."""

    @catalog_app.command("selections")
    def selections(db: Db = None) -> None:
        """List every subset: id, selector, budget, size, config hash."""
        with user_errors():
            rows = _catalog(db).query(
                "SELECT selection_id, selector, budget, k, config_hash, left(pool_id, 12) AS pool, "
                "created_at FROM selections ORDER BY created_at, selection_id")
        print_table(rows)

    @catalog_app.command("configs")
    def configs(db: Db = None) -> None:
        """List registered selector configs (the partitions of scored_subset)."""
        with user_errors():
            rows = _catalog(db).selector_configs()
        print_table([{**r, "config": json.dumps(r["config"], sort_keys=True)} for r in rows])

    @catalog_app.command("register-config")
    def register_config(
        selector: Annotated[str, typer.Argument(help="Selector: random, less, el2n, gtp.")],
        budget: Annotated[float, typer.Option(help="Fraction of the pool (<1) or a count.")],
        param: Annotated[list[str] | None, typer.Option(
            help="Selector option as key=value (JSON value or plain text); repeatable.")] = None,
        db: Db = None,
    ) -> None:
        """Register a selector config; the subsets sensor then materializes scored_subset for it."""
        from curation.selection import selection_config
        from curation.selectors import make_selector

        with user_errors():
            if budget <= 0:
                raise CurationError(f"--budget must be > 0, got {budget}")
            config = selection_config(make_selector(selector, **_params(param or [])), budget)
            key = _catalog(db).register_config(config)
        console.print(f"config {key}: {json.dumps(config, sort_keys=True)}")

    @catalog_app.command("releases-with")
    def releases_with(
        example_id: Annotated[str, typer.Argument(help="An example id of the pool.")],
        db: Db = None,
    ) -> None:
        """Every release that contains EXAMPLE_ID, and its rank there."""
        with user_errors():
            rows = _catalog(db).releases_containing(example_id)
        print_table(rows)

    @catalog_app.command("overlap")
    def overlap(
        a: Annotated[str, typer.Argument(help="Selection id (or unique prefix).")],
        b: Annotated[str, typer.Argument(help="Selection id (or unique prefix).")],
        db: Db = None,
    ) -> None:
        """Overlap of two subsets: sizes, intersection, union and Jaccard index."""
        with user_errors():
            row = _catalog(db).overlap(a, b)
        print_table([{"field": k, "value": v} for k, v in row.items()])

    @catalog_app.command("mix")
    def mix(
        selection: Annotated[str, typer.Argument(help="Selection id (or unique prefix).")],
        by: Annotated[str, typer.Option(help="label or domain.")] = "label",
        db: Db = None,
    ) -> None:
        """Label (or domain) mix of a subset next to its pool."""
        with user_errors():
            rows = _catalog(db).mix(selection, by)
        print_table(rows)


def _params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CurationError(f"--param must be key=value, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@release_app.command("create")
def create(
    selection: Annotated[str, typer.Argument(
        help="Catalog id (or unique prefix) of a selection or distilled set, or its .parquet "
             "file (a selection with .lineage.json beside, a distilled.parquet with "
             "lineage.json beside).")],
    version: Annotated[str, typer.Option(help="New release version, e.g. v1 (immutable).")],
    pool: Annotated[Path | None, typer.Option(
        help="Pool file of a selection file whose pool is not in the catalog.")] = None,
    kind: Annotated[str, typer.Option(help="selection or distilled.")] = "selection",
    repo: Repo = Path("."),
    remote: Annotated[str | None, typer.Option(
        help="DVC remote name (default: the repository's default remote).")] = None,
    db: Db = None,
) -> None:
    """Export a subset (or distilled set) as releases/VERSION, track it with DVC, push it,
    record it in the catalog."""
    from curation.release import (
        create_release,
        register_distilled_file,
        register_selection_file,
    )

    with user_errors():
        catalog = _catalog(db)
        ref = selection
        if selection.endswith(".parquet"):
            if not Path(selection).exists():
                raise CurationError(f"{kind} file not found: {selection}")
            register = register_distilled_file if kind == "distilled" else register_selection_file
            ref = register(catalog, selection, pool)
        record = create_release(catalog, ref, version, repo_root=repo, remote=remote, kind=kind)
    console.print(f"released {record['version']}: {record['n_rows']} rows of {record['source_kind']}"
                  f" {record['source_id']} -> {record['directory']}")
    console.print(f"pushed to DVC remote {record['remote']} ({record['remote_url']}); "
                  f"commit {Path(record['dvc_file']).name} and releases/.gitignore to git")


@release_app.command("list")
def list_releases(db: Db = None) -> None:
    """Every release, oldest first."""
    with user_errors():
        rows = _catalog(db).releases().select(
            ["version", "selector", "config_hash", "n_rows", "source_id", "created_at"])
    print_table(rows)


@release_app.command("show")
def show(
    version: Annotated[str, typer.Argument(help="Release version.")],
    db: Db = None,
) -> None:
    """A release's source, config, DVC record and files."""
    with user_errors():
        record = _catalog(db).release(version)
    lineage = record["lineage"].get("lineage", {})
    facts = {k: record[k] for k in ("version", "source_kind", "source_id", "selector",
                                    "config_hash", "pool_id", "n_rows", "created_at",
                                    "directory", "dvc_file", "dvc_md5", "remote", "remote_url")}
    facts["config"] = json.dumps(lineage.get("config"), sort_keys=True)
    facts["code"] = json.dumps(lineage.get("code_version"), sort_keys=True)
    print_table([{"field": k, "value": v} for k, v in facts.items()], title=f"release {version}")
    print_table(record["files"], title="files")


@release_app.command("checkout")
def checkout(
    version: Annotated[str, typer.Argument(help="Release version.")],
    out: Annotated[Path, typer.Option(help="New or empty directory to restore into.")],
    repo: Repo = Path("."),
    db: Db = None,
) -> None:
    """Restore a release byte for byte (from the DVC cache or remote) into OUT."""
    from curation.release import checkout_release

    with user_errors():
        files = checkout_release(_catalog(db), version, out, repo_root=repo)
    console.print(f"restored {version}: {len(files)} files verified against their recorded "
                  f"sha256 -> {out}")
