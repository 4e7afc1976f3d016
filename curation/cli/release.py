"""``curation release ...``: immutable, DVC-versioned dataset releases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from curation.cli.common import Db, console, open_catalog, print_table, user_errors
from curation.errors import CurationError

release_app = typer.Typer(
    help="Immutable, DVC-versioned dataset releases of a subset (Parquet + lineage + card).",
    no_args_is_help=True)
Repo = Annotated[Path, typer.Option(help="A directory inside the DVC repository.")]


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
        catalog = open_catalog(db)
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
        rows = open_catalog(db).releases().select(
            ["version", "selector", "config_hash", "n_rows", "source_id", "created_at"])
    print_table(rows)


@release_app.command("show")
def show(
    version: Annotated[str, typer.Argument(help="Release version.")],
    db: Db = None,
) -> None:
    """A release's source, config, DVC record and files."""
    with user_errors():
        record = open_catalog(db).release(version)
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
        files = checkout_release(open_catalog(db), version, out, repo_root=repo)
    console.print(f"restored {version}: {len(files)} files verified against their recorded "
                  f"sha256 -> {out}")
