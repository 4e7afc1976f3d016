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
are immutable: the catalog's primary key and an exclusive ``mkdir`` both refuse a second ``V``.
``checkout_release`` restores ``V`` from the DVC cache or remote into any directory using the
recorded ``.dvc`` text (so a later edit of ``releases/V`` or of the ``.dvc`` file cannot change
what comes back) and verifies every byte against the recorded md5s.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from curation.catalog import Catalog
from curation.errors import CurationError
from curation.io import sha256_file, write_atomic, write_json, write_parquet
from curation.lineage import canonical_json, code_version, config_hash
from curation.pool import Pool, load_pool

RELEASES_DIR = "releases"
KINDS = ("selection", "distilled")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
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
    if not _VERSION.match(version) or version.endswith(".dvc"):
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
    lineage = json.loads(lineage_path.read_text())
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
    lineage = json.loads(lineage_path.read_text())
    _register_pool(catalog, path, lineage.get("pool_id"), pool_path)
    return catalog.record_distilled_set(sha256_file(path)[:16], path, lineage)


def _register_pool(catalog: Catalog, source: Path, pool_id: str | None,
                   pool_path: str | Path | None) -> None:
    known = catalog.pool(pool_id or "") if catalog.path.exists() else None
    if pool_path is None:
        if not (known and known.get("path")):
            raise CurationError(f"{source}: its pool {pool_id} is not in the catalog; "
                                "pass the pool file (--pool)")
        return
    pool = load_pool(pool_path)
    if pool.content_hash != pool_id:
        raise CurationError(f"{pool_path} is not the pool of {source}: content hash "
                            f"{pool.content_hash[:16]}..., lineage names {str(pool_id)[:16]}...")
    catalog.record_pool(pool, "pool", path=pool_path)


def create_release(catalog: Catalog, ref: str, version: str, *, repo_root: str | Path = ".",
                   remote: str | None = None, kind: str = "selection") -> dict:
    """Export, ``dvc add``, ``dvc push`` and record release ``version`` of a catalog subset."""
    check_version(version)
    root = find_repo_root(repo_root)
    with _dvc(root) as repo:
        remote_name, remote_url = _remote(repo, remote)
    if catalog.path.exists() and version in catalog.query(
            "SELECT version FROM releases").column("version").to_pylist():
        existing = catalog.release(version)
        raise CurationError(f"release {version!r} already exists (created {existing['created_at']},"
                            f" {existing['source_kind']} {existing['source_id']}); versions are "
                            "immutable, choose a new one")
    source = load_source(catalog, ref, kind)
    releases = root / RELEASES_DIR
    releases.mkdir(exist_ok=True)
    out, dvc_file = releases / version, releases / f"{version}.dvc"
    if dvc_file.exists():
        raise CurationError(f"release {version!r} already exists: {dvc_file}; versions are "
                            "immutable, choose a new one")
    try:
        out.mkdir()
    except FileExistsError:
        raise CurationError(f"release {version!r} already exists: {out}; versions are "
                            "immutable, choose a new one") from None
    try:
        created_at = datetime.now(UTC).replace(microsecond=0)
        metrics = catalog.evaluations(source.source_id)
        pool = _source_pool(source)
        data, members = _export(source, pool, out / "data.parquet")
        n_rows, pool_n = data.num_rows, len(pool)
        lineage = {"version": version, "source_kind": source.kind, "source_id": source.source_id,
                   "released_at": created_at.isoformat(), "release_code_version": code_version(),
                   "pool": {"pool_id": source.pool_id, "path": source.pool_path, "rows": pool_n},
                   "rows": n_rows, "metrics": metrics, "lineage": source.lineage}
        write_json(out / "lineage.json", lineage)
        card = dataset_card(source, version, data, pool.table, metrics, created_at)
        write_atomic(out / "README.md", lambda p: p.write_text(card))
        files = _file_table(out)
        with _dvc(root) as repo:
            repo.scm_context.quiet = True
            repo.add([str(out)])
            pushed = repo.push(targets=[str(dvc_file)], remote=remote_name)
        dvc_text = dvc_file.read_text()
        record = {"version": version, "source_kind": source.kind, "source_id": source.source_id,
                  "config_hash": source.config_hash, "selector": source.selector,
                  "pool_id": source.pool_id, "n_rows": n_rows, "directory": str(out),
                  "dvc_file": str(dvc_file), "dvc_md5": yaml.safe_load(dvc_text)["outs"][0]["md5"],
                  "dvc_text": dvc_text, "remote": remote_name, "remote_url": remote_url,
                  "lineage": lineage, "created_at": created_at.replace(tzinfo=None)}
        catalog.record_release(record, members, files)
    except BaseException:
        _undo(root, out, dvc_file)
        raise
    return {**record, "files": files.to_pylist(), "pushed": pushed}


def checkout_release(catalog: Catalog, version: str, out_dir: str | Path, *,
                     repo_root: str | Path = ".") -> list[Path]:
    """Restore release ``version`` into ``out_dir`` byte for byte (from cache or remote)."""
    record = catalog.release(version)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CurationError(f"--out {out_dir} exists and is not empty; choose a new directory")
    root = find_repo_root(repo_root)
    (root / RELEASES_DIR).mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".restore-", dir=root / RELEASES_DIR))
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
    from dvc.repo import Repo

    repo = Repo(str(root))
    try:
        yield repo
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


def _undo(root: Path, out: Path, dvc_file: Path) -> None:
    """Remove a half-made release so the version stays free."""
    if dvc_file.exists():
        try:
            with _dvc(root) as repo:
                repo.remove(str(dvc_file))
        except Exception:  # best effort: the .dvc file is removed below either way
            pass
        dvc_file.unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
