"""Immutable, DVC-versioned dataset releases of a subset (or a distilled set).

A release ``V`` is a directory ``releases/V/`` in the project's DVC repository holding

- ``data.parquet``: for a subset, the chosen pool rows in rank order, every pool column plus
  ``selection_weight``, ``selection_score`` and ``selection_rank``; for a distilled set, its
  rows as ``curation.distill`` wrote them (``id, features, label, soft_label, source_id``);
- ``lineage.json``: the subset's lineage (selector config and hash, datastore, proxy
  checkpoints, pool content hash, code version) plus the release's own facts and metrics;
- ``README.md``: a dataset card (counts, label and domain mix against the pool, metrics, config).

``create_release`` writes it, tracks it with ``dvc add`` (``releases/V.dvc``), pushes it to a
DVC remote and records it in the catalog with the ``.dvc`` text and every file's md5. Versions
are immutable: the catalog's primary key refuses a second ``V``.

Atomic: a release is built in a hidden staging directory ``releases/.staging-*/`` (exported,
``dvc add``-ed and pushed there), then a journal (``release.json``) is written into it, the
directory and its ``.dvc`` file are renamed into place and the catalog row is written; only
then is the staging directory removed. Every create and checkout of one repository holds
a lock in ``.dvc/tmp`` (waiting for another, bounded, with a status line), so DVC never sees two
of them at once, and first recovers what a killed run left: staging without a journal is
deleted; with a journal but no matching catalog row, the renamed directory and ``.dvc``
file and their ``.gitignore`` entry are removed too, so the version is free again.
``checkout_release`` restores ``V`` from the DVC cache or remote into any directory using the
recorded ``.dvc`` text (so a later edit of ``releases/V`` or of the ``.dvc`` file cannot change
what comes back) and verifies every byte against the recorded md5s.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from curation.catalog import Catalog
from curation.errors import CurationError
from curation.io import sha256_file, write_atomic, write_json, write_parquet
from curation.lineage import canonical_json, code_version, config_hash
from curation.locks import lock_timeout, wait_for_lock
from curation.pool import Pool, load_pool

if TYPE_CHECKING:  # pandas only for the dataset card: every release process starts faster
    import pandas as pd

RELEASES_DIR = "releases"
KINDS = ("selection", "distilled")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch: no trailing newline
STAGING_PREFIX, RESTORE_PREFIX, JOURNAL = ".staging-", ".restore-", "release.json"
RELEASE_LOCK_TIMEOUT = 600.0  # seconds a create / checkout waits for another in the same repo
KILL_AT_ENV = "CURATION_RELEASE_KILL_AT"  # fault injection for the tests: SIGKILL at a stage
_EXTRA_COLUMNS = ("selection_weight", "selection_score", "selection_rank")


@dataclass(frozen=True)
class ReleaseSource:
    """What a release exports: members of a selection or distilled set, and their lineage."""

    kind: str
    source_id: str
    members: pa.Table
    lineage: dict
    pool_id: str
    pool_path: str
    config_hash: str | None
    selector: str | None
    path: str | None = None  # a distilled set's Parquet file


def check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version) \
            or version.endswith(".dvc"):
        raise CurationError(f"release version {version!r} must be 1-64 letters, digits, '.', "
                            "'_' or '-', start with a letter or digit (e.g. v1, 2024.06)")
    return version


def find_repo_root(path: str | Path = ".") -> Path:
    """The DVC repository containing ``path`` (searching upward)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(str(path)))
    except NotDvcRepoError:
        raise CurationError(f"{Path(path).resolve()} is not inside a DVC repository "
                            "(no .dvc directory); run `dvc init` there") from None


def load_source(catalog: Catalog, ref: str, kind: str = "selection") -> ReleaseSource:
    """A selection or distilled set from the catalog, by id or unique prefix."""
    if kind not in KINDS:
        raise CurationError(f"release source kind must be one of {KINDS}, got {kind!r}")
    row = catalog.selection(ref) if kind == "selection" else catalog.distilled_set(ref)
    source_id = row["selection_id"] if kind == "selection" else row["distilled_id"]
    lineage = row["lineage"]
    pool = catalog.pool(row["pool_id"]) if row.get("pool_id") else None
    if pool is None or not pool.get("path"):
        raise CurationError(f"{kind} {source_id}: its pool {row.get('pool_id')} has no file "
                            "recorded in the catalog; pass the pool file (--pool)")
    if not Path(pool["path"]).exists():
        raise CurationError(f"{kind} {source_id}: its pool file {pool['path']} (recorded in the "
                            "catalog) no longer exists; pass the pool file (--pool)")
    if kind == "selection":
        return ReleaseSource(kind, source_id, catalog.members(kind, source_id), lineage,
                             row["pool_id"], pool["path"], lineage.get("config_hash"),
                             lineage.get("selector"))
    subset = catalog.selection(row["selection_id"]) if row.get("selection_id") else None
    return ReleaseSource(kind, source_id, catalog.members(kind, source_id), lineage,
                         row["pool_id"], pool["path"], subset and subset["config_hash"],
                         f"distilled ({row.get('method') or 'unknown'})", row.get("path"))


def register_selection_file(catalog: Catalog, path: str | Path,
                            pool_path: str | Path | None = None) -> str:
    """Record a selection written by ``curation select`` (Parquet + ``.lineage.json``) and its
    pool in the catalog; returns the selection id."""
    path = Path(path)
    lineage_path = path.with_suffix(".lineage.json")
    if not lineage_path.exists():
        raise CurationError(f"lineage file not found beside the selection: {lineage_path}")
    lineage = read_lineage(lineage_path, ("pool_id", "config_hash", "selector", "config"))
    _register_pool(catalog, path, lineage.get("pool_id"), pool_path)
    return catalog.load_selection_file(path, lineage)


def register_distilled_file(catalog: Catalog, path: str | Path,
                            pool_path: str | Path | None = None) -> str:
    """Record a distilled set written by ``curation distill`` (``distilled.parquet`` with its
    ``lineage.json`` beside) and its pool in the catalog; returns its id (the file's sha256
    prefix)."""
    path = Path(path)
    lineage_path = path.parent / "lineage.json"
    if not lineage_path.exists():
        raise CurationError(f"lineage file not found beside the distilled set: {lineage_path}")
    lineage = read_lineage(lineage_path, ("pool_id",))
    _register_pool(catalog, path, lineage.get("pool_id"), pool_path)
    return catalog.record_distilled_set(sha256_file(path)[:16], path, lineage)


def read_lineage(path: Path, keys: tuple[str, ...]) -> dict:
    """A lineage JSON file that must be an object holding ``keys``; else one line naming it."""
    try:
        lineage = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CurationError(f"{path} is not a JSON lineage record: {exc}") from None
    if not isinstance(lineage, dict):
        raise CurationError(f"{path} is not a JSON lineage record: expected an object, got "
                            f"{type(lineage).__name__}")
    missing = [k for k in keys if k not in lineage]
    if missing:
        raise CurationError(f"{path}: lineage record is missing {missing}")
    if "config" in keys and not (isinstance(lineage["config"], dict)
                                 and "budget" in lineage["config"]):
        raise CurationError(f"{path}: lineage 'config' must be an object with a 'budget'")
    return lineage


def _register_pool(catalog: Catalog, source: Path, pool_id: str | None,
                   pool_path: str | Path | None) -> None:
    """Make sure the catalog knows the source's pool and its file: the lineage's pool as the
    catalog recorded it (``curation select`` does), or the given ``pool_path``."""
    known = catalog.pool(pool_id or "") if catalog.path.exists() else None
    if pool_path is None:
        if not (known and known.get("path")):
            raise CurationError(f"{source}: its pool {pool_id} is not in the catalog; "
                                "pass the pool file (--pool)")
        if not Path(known["path"]).exists():
            raise CurationError(f"{source}: its pool file {known['path']} (recorded in the "
                                "catalog) no longer exists; pass the pool file (--pool)")
        return
    pool = load_pool(pool_path)
    if pool.content_hash != pool_id:
        raise CurationError(f"{pool_path} is not the pool of {source}: content hash "
                            f"{pool.content_hash[:16]}..., lineage names {str(pool_id)[:16]}...")
    catalog.record_pool(pool, "pool", path=pool_path)


def create_release(catalog: Catalog, ref: str, version: str, *, repo_root: str | Path = ".",
                   remote: str | None = None, kind: str = "selection") -> dict:
    """Export, ``dvc add``, ``dvc push`` and record release ``version`` of a catalog subset;
    nothing becomes visible until all of it is done (see the module docstring)."""
    check_version(version)
    root = find_repo_root(repo_root)
    source = load_source(catalog, ref, kind)
    pool = _source_pool(source)
    releases = root / RELEASES_DIR
    with _dvc(root) as repo:
        remote_name, remote_url = _remote(repo, remote)
    with release_lock(root):
        recover_releases(catalog, root)
        _check_free(catalog, releases, version)
        releases.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=releases))
        try:
            record, members, files, pushed = _stage_release(
                catalog, root, staging, source, pool, version, remote_name, remote_url)
            _publish(catalog, root, staging, record, members, files)
        except BaseException:
            _undo_staged(root, staging, version)
            raise
    return {**record, "files": files.to_pylist(), "pushed": pushed}


def _stage_release(catalog: Catalog, root: Path, staging: Path, source: ReleaseSource,
                   pool: Pool, version: str, remote_name: str, remote_url: str
                   ) -> tuple[dict, pa.Table, pa.Table, int]:
    """Write, ``dvc add`` and push the release inside ``staging``; return its catalog record
    (paths as they will be once published), members, files and the count pushed."""
    out, dvc_file = staging / version, staging / f"{version}.dvc"
    out.mkdir()
    created_at = datetime.now(UTC).replace(microsecond=0)
    metrics = catalog.evaluations(source.source_id)
    data, members = _export(source, pool, out / "data.parquet")
    lineage = {"version": version, "source_kind": source.kind, "source_id": source.source_id,
               "released_at": created_at.isoformat(), "release_code_version": code_version(),
               "pool": {"pool_id": source.pool_id, "path": source.pool_path, "rows": len(pool)},
               "rows": data.num_rows, "metrics": metrics, "lineage": source.lineage}
    write_json(out / "lineage.json", lineage)
    card = dataset_card(source, version, data, pool.table, metrics, created_at)
    write_atomic(out / "README.md", lambda p: p.write_text(card))
    files = _file_table(out)
    with _dvc(root) as repo:
        repo.scm_context.quiet = True
        repo.add([str(out)])
        _fault_point("added")
        pushed = repo.push(targets=[str(dvc_file)], remote=remote_name)
    dvc_text = dvc_file.read_text()
    releases = root / RELEASES_DIR
    record = {"version": version, "source_kind": source.kind, "source_id": source.source_id,
              "config_hash": source.config_hash, "selector": source.selector,
              "pool_id": source.pool_id, "n_rows": data.num_rows,
              "directory": str(releases / version), "dvc_file": str(releases / f"{version}.dvc"),
              "dvc_md5": yaml.safe_load(dvc_text)["outs"][0]["md5"], "dvc_text": dvc_text,
              "remote": remote_name, "remote_url": remote_url, "lineage": lineage,
              "created_at": created_at.replace(tzinfo=None)}
    return record, members, files, pushed


def _publish(catalog: Catalog, root: Path, staging: Path, record: dict, members: pa.Table,
             files: pa.Table) -> None:
    """Journal, rename into place, ignore in git, record in the catalog, drop the staging."""
    version = record["version"]
    releases = root / RELEASES_DIR
    write_json(staging / JOURNAL, {"version": version, "dvc_md5": record["dvc_md5"],
                                   "catalog": str(catalog.path.resolve())})
    with _dvc(root) as repo:  # an entry for a path not there yet ignores nothing
        repo.scm.ignore(str(releases / version))
    _fault_point("ignored")
    # From here to the catalog row takes milliseconds; a kill in between is taken back by
    # the next create or checkout (``recover_releases``).
    (staging / version).rename(releases / version)
    _fault_point("directory-visible")
    (staging / f"{version}.dvc").rename(releases / f"{version}.dvc")
    _fault_point("dvc-visible")
    catalog.record_release(record, members, files)
    _fault_point("recorded")
    shutil.rmtree(staging)


@contextmanager
def release_lock(root: Path) -> Iterator[None]:
    """Hold the release lock of the repository at ``root`` (in DVC's untracked
    ``.dvc/tmp``): one create or checkout at a time, so DVC's own repository lock is never
    contended between them."""
    with wait_for_lock(root / ".dvc" / "tmp" / "curation-releases.lock",
                       f"the DVC releases of {root}", lock_timeout(RELEASE_LOCK_TIMEOUT)):
        yield


def recover_releases(catalog: Catalog, root: Path) -> list[str]:
    """Clean up after killed creates and checkouts (call under ``release_lock``): every
    staging or restore directory is stale; a journaled release the catalog does not hold is
    taken back out of ``releases/``. Returns the versions taken back."""
    releases, undone = root / RELEASES_DIR, []
    if not releases.is_dir():
        return undone
    for scratch in sorted(releases.glob(f"{RESTORE_PREFIX}*")):
        shutil.rmtree(scratch, ignore_errors=True)
    for staging in sorted(releases.glob(f"{STAGING_PREFIX}*")):
        journal = _read_journal(staging / JOURNAL)
        # The catalog the killed run wrote to decides (a repository may serve several).
        owner = Catalog(journal["catalog"]) if journal and journal.get("catalog") else catalog
        if journal and not _recorded(owner, journal["version"], journal["dvc_md5"]):
            _undo_staged(root, staging, journal["version"])
            undone.append(journal["version"])
        shutil.rmtree(staging, ignore_errors=True)
    return undone


def _read_journal(path: Path) -> dict | None:
    try:
        journal = json.loads(path.read_text())
    except (OSError, ValueError):  # no journal (killed before it) or cut off: nothing visible
        return None
    ok = isinstance(journal, dict) and isinstance(journal.get("version"), str)
    return journal if ok else None


def _recorded(catalog: Catalog, version: str, dvc_md5: str) -> bool:
    if not catalog.path.exists():
        return False
    rows = catalog.query("SELECT dvc_md5 FROM releases WHERE version = ?", [version])
    return rows.num_rows > 0 and rows.column("dvc_md5")[0].as_py() == dvc_md5


def _undo_staged(root: Path, staging: Path, version: str) -> None:
    """Take back whatever of the staged release ``version`` was renamed into ``releases/``:
    a directory or ``.dvc`` file counts as ours only if it is gone from ``staging``."""
    releases = root / RELEASES_DIR
    moved_dir = not (staging / version).exists() and (releases / version).exists()
    moved_dvc = not (staging / f"{version}.dvc").exists() and \
        (releases / f"{version}.dvc").exists()
    if moved_dvc:
        (releases / f"{version}.dvc").unlink()
    if moved_dir:
        shutil.rmtree(releases / version)
    if moved_dir or moved_dvc or not (releases / version).exists():
        try:
            with _dvc(root) as repo:
                repo.scm.ignore_remove(str(releases / version))
        except Exception:  # best effort: an entry for a missing path ignores nothing
            pass
    shutil.rmtree(staging, ignore_errors=True)


def _check_free(catalog: Catalog, releases: Path, version: str) -> None:
    """Refuse a version the catalog or the workspace already holds (versions are immutable)."""
    if catalog.path.exists() and catalog.query(
            "SELECT 1 FROM releases WHERE version = ?", [version]).num_rows:
        existing = catalog.release(version)
        raise CurationError(f"release {version!r} already exists (created {existing['created_at']},"
                            f" {existing['source_kind']} {existing['source_id']}); versions are "
                            "immutable, choose a new one")
    for path in (releases / version, releases / f"{version}.dvc"):
        if path.exists():
            raise CurationError(f"release {version!r} already exists: {path} (not in the catalog "
                                f"{catalog.path}); versions are immutable, choose a new one")


def _fault_point(stage: str) -> None:
    """Fault injection for the tests: a real SIGKILL of this process at ``stage`` when
    ``$CURATION_RELEASE_KILL_AT`` names it."""
    if os.environ.get(KILL_AT_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def checkout_release(catalog: Catalog, version: str, out_dir: str | Path, *,
                     repo_root: str | Path = ".") -> list[Path]:
    """Restore release ``version`` into ``out_dir`` byte for byte (from cache or remote)."""
    record = catalog.release(version)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CurationError(f"--out {out_dir} exists and is not empty; choose a new directory")
    root = find_repo_root(repo_root)
    with release_lock(root):
        recover_releases(catalog, root)
        (root / RELEASES_DIR).mkdir(exist_ok=True)
        return _checkout(record, version, out_dir, root)


def _checkout(record: dict, version: str, out_dir: Path, root: Path) -> list[Path]:
    scratch = Path(tempfile.mkdtemp(prefix=RESTORE_PREFIX, dir=root / RELEASES_DIR))
    staging = None
    try:
        target = scratch / f"{version}.dvc"
        target.write_text(record["dvc_text"])
        with _dvc(root) as repo:
            remote = record["remote"] if record["remote"] in repo.config["remote"] else None
            try:
                repo.fetch(targets=[str(target)], remote=remote)
                repo.checkout(targets=[str(target)], force=True)
            except Exception as exc:
                raise CurationError(f"cannot restore release {version!r} from the DVC cache or "
                                    f"remote {remote or '(default)'}: {exc}") from exc
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        shutil.copytree(scratch / version, staging, dirs_exist_ok=True, symlinks=False)
        _verify(staging, record)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
        staging = None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


def dataset_card(source: ReleaseSource, version: str, data: pa.Table, pool: pa.Table,
                 metrics: list[dict], created_at: datetime) -> str:
    """The README of a release: what it is, what is in it, how it was made."""
    import pandas as pd

    data = data.select([c for c in ("label", "domain") if c in data.column_names])
    pool = pool.select([c for c in ("label", "domain") if c in pool.column_names])
    data, pool = data.to_pandas(), pool.to_pandas()
    lineage = source.lineage
    code = lineage.get("code_version") or {}
    dirty = " (dirty)" if code.get("dirty") else ""
    distill_config = lineage.get("config") or {}
    made_by = (f"selector **{source.selector}** at budget {lineage['config']['budget']}"
               if source.kind == "selection" and lineage.get("config")
               else f"**{distill_config.get('method', 'unknown')}** distillation "
                    f"({distill_config.get('labels', 'unknown')} labels) of the subset of config "
                    f"`{source.config_hash or '-'}`, distilled set `{source.source_id}`")
    what = ("examples of pool" if source.kind == "selection"
            else "distilled rows drawn from pool")
    facts = pd.DataFrame([
        ("version", version), ("rows", len(data)), ("pool rows", len(pool)),
        ("source", f"{source.kind} {source.source_id}"),
        ("config hash", source.config_hash or "-"), ("pool id", source.pool_id),
        ("datastore", lineage.get("datastore_id") or "-"),
        ("proxy checkpoints", len(lineage.get("proxy_checkpoints") or [])),
        ("code", f"{code.get('git_sha', 'unknown')}{dirty}"),
        ("released", created_at.isoformat())], columns=["", "value"])
    parts = [f"# Dataset release {version}", "",
             f"{len(data)} {what} `{source.pool_id[:16]}`, made by {made_by}.", "",
             facts.to_markdown(index=False), ""]
    for column in ("label", "domain"):
        if column in data.columns and column in pool.columns:
            parts += [f"## {column.capitalize()} mix (release vs pool)", "",
                      mix_frame(data[column], pool[column]).to_markdown(index=False,
                                                                        floatfmt=".3f"), ""]
    parts += ["## Metrics", ""]
    if metrics:
        parts += [pd.DataFrame(metrics).to_markdown(index=False, floatfmt=".4f"), ""]
    else:
        parts += ["No evaluation of this subset is recorded in the catalog.", ""]
    config = lineage.get("config") or {k: v for k, v in lineage.items() if k != "code_version"}
    parts += ["## Config", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", "",
              f"Canonical form (its hash: `{config_hash(config)}`):", "",
              f"`{canonical_json(config)}`", "",
              "## Files", "",
              ("- `data.parquet`: the examples in rank order, pool columns plus "
               + ", ".join(f"`{c}`" for c in _EXTRA_COLUMNS)) if source.kind == "selection"
              else "- `data.parquet`: the distilled rows: `id`, `features`, `label`, "
                   "`soft_label` (class probabilities), `source_id` (the pool example)",
              "- `lineage.json`: the full lineage record and these metrics", "",
              "## Restore", "", "```bash",
              f"curation release checkout {version} --out DIR   # byte-identical, from DVC",
              "```", ""]
    return "\n".join(parts)


def mix_frame(subset: pd.Series, pool: pd.Series) -> pd.DataFrame:
    """Count and share of each value in a subset next to its pool."""
    import pandas as pd

    frame = pd.DataFrame({"subset_n": subset.astype(str).value_counts(),
                          "pool_n": pool.astype(str).value_counts()}).fillna(0)
    frame = frame.astype(int)
    frame["subset_share"] = frame["subset_n"] / max(frame["subset_n"].sum(), 1)
    frame["pool_share"] = frame["pool_n"] / max(frame["pool_n"].sum(), 1)
    frame.index.name = "value"
    frame = frame.reset_index()
    order = pd.to_numeric(frame["value"], errors="coerce")
    frame = frame.assign(_order=order).sort_values(["_order", "value"]).drop(columns="_order")
    return frame[["value", "subset_n", "subset_share", "pool_n", "pool_share"]]


# -- helpers -----------------------------------------------------------------------------

@contextmanager
def _dvc(root: Path) -> Iterator:
    from dvc.lock import LockError
    from dvc.repo import Repo

    repo = Repo(str(root))
    try:
        yield repo
    except LockError as exc:  # a DVC command outside curation holds the repository
        raise CurationError(f"the DVC repository {root} is busy ({exc}); retry when the other "
                            "DVC command is done") from None
    finally:
        repo.close()


def _remote(repo, name: str | None) -> tuple[str, str]:
    remotes = repo.config["remote"]
    name = name or repo.config["core"].get("remote")
    if not name:
        raise CurationError(f"no DVC remote configured in {repo.root_dir}/.dvc/config; add one "
                            "with `dvc remote add -d NAME URL` or pass a remote name")
    if name not in remotes:
        raise CurationError(f"DVC remote {name!r} is not configured in {repo.root_dir}; "
                            f"known: {sorted(remotes) or 'none'}")
    return name, str(remotes[name]["url"])


def _source_pool(source: ReleaseSource) -> Pool:
    """The source's pool file, refused if its content is not the pool the lineage names."""
    pool = load_pool(source.pool_path, require_label=False)
    if pool.content_hash != source.pool_id:
        raise CurationError(f"pool file {source.pool_path} changed since the {source.kind} was "
                            f"made (content hash {pool.content_hash[:16]}..., lineage names "
                            f"{source.pool_id[:16]}...)")
    return pool


def _export(source: ReleaseSource, pool: Pool, target: Path) -> tuple[pa.Table, pa.Table]:
    """Write the release's rows; return them and its members (pool ``id``, ``rank``)."""
    if source.kind == "distilled":
        if not source.path or not Path(source.path).exists():
            raise CurationError(f"distilled set {source.source_id}: its file {source.path} "
                                "is missing")
        table = pq.read_table(source.path)
        outside = sorted(set(table.column("source_id").to_pylist()) - set(pool.ids))
        if outside:
            raise CurationError(f"{len(outside)} source ids of distilled set "
                                f"{source.source_id} are not in the pool file "
                                f"{source.pool_path}, e.g. {outside[0]!r}")
        write_parquet(target, table)
        return table, pa.table({"id": table.column("source_id"),
                                "rank": pa.array(range(table.num_rows), pa.int32())})
    clash = sorted(set(_EXTRA_COLUMNS) & set(pool.table.column_names))
    if clash:
        raise CurationError(f"pool file {source.pool_path} already has columns {clash}, which "
                            "a release adds; rename them in the pool")
    con = duckdb.connect()
    try:
        con.register("pool", pool.table)
        con.register("members", source.members)
        table = con.sql(
            "SELECT p.*, m.weight AS selection_weight, m.score AS selection_score, "
            "m.rank AS selection_rank FROM pool p JOIN members m ON p.id = m.id "
            "ORDER BY m.rank").to_arrow_table()
    finally:
        con.close()
    if table.num_rows != source.members.num_rows:
        raise CurationError(f"{source.members.num_rows - table.num_rows} ids of selection "
                            f"{source.source_id} are not in the pool file {source.pool_path}")
    write_parquet(target, table)
    return table, pa.table({"id": table.column("id"),
                            "rank": table.column("selection_rank").cast(pa.int32())})


def _file_table(directory: Path) -> pa.Table:
    rows = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rows.append({"relpath": path.relative_to(directory).as_posix(),
                     "size": path.stat().st_size, "md5": _md5(path),
                     "sha256": sha256_file(path)})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("relpath", pa.string()), ("size", pa.int64()), ("md5", pa.string()),
        ("sha256", pa.string())]))


def _verify(directory: Path, record: dict) -> None:
    expected = {f["relpath"]: f for f in record["files"]}
    found = {p.relative_to(directory).as_posix(): p for p in directory.rglob("*") if p.is_file()}
    if set(found) != set(expected):
        raise CurationError(f"restored release {record['version']!r} has files {sorted(found)}, "
                            f"the catalog recorded {sorted(expected)}")
    for relpath, path in found.items():
        if sha256_file(path) != expected[relpath]["sha256"]:
            raise CurationError(f"restored {relpath} of release {record['version']!r} does not "
                                "match its recorded sha256")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
