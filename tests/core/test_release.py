"""Releases: a real git + DVC repository in a temp dir with a local-directory remote."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.catalog import Catalog
from curation.errors import CurationError
from curation.lineage import selection_lineage
from curation.pool import features_table, validate_table
from curation.release import checkout_release, create_release
from curation.selectors import Selection
from tests.conftest import init_dvc_repo


@pytest.fixture
def dvc_repo(tmp_path: Path) -> Path:
    """A git repo with DVC initialised and a local-directory default remote."""
    return init_dvc_repo(tmp_path / "project", tmp_path / "remote")


@pytest.fixture
def catalog_with_selection(tmp_path: Path) -> tuple[Catalog, str]:
    rng = np.random.default_rng(0)
    n = 40
    table = features_table([f"ex{i:03d}" for i in range(n)], rng.normal(size=(n, 5)),
                           labels=np.arange(n) % 4, domain=["news", "web"] * (n // 2))
    pool_path = tmp_path / "pool.parquet"
    pq.write_table(table, pool_path)
    pool = validate_table(table, source=str(pool_path))
    catalog = Catalog(tmp_path / "catalog.duckdb")
    catalog.record_pool(pool, "pool", path=pool_path)
    rows = np.array([7, 3, 21, 12, 30, 5])
    selection = Selection(pool.ids[rows], rows, np.linspace(1, 0.5, len(rows)),
                          np.arange(len(rows), 0, -1).astype(float))
    lineage = selection_lineage({"selector": "random", "seed": 3}, budget=6, k=len(rows),
                                pool_id=pool.content_hash, datastore_id=None,
                                proxy_checkpoints=[], n_pool=n)
    sid = catalog.record_selection(selection, lineage)
    catalog.record_evaluation(sid, "test", [0.61, 0.65], [0, 1], len(rows))
    return catalog, sid


def _bytes(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_release_push_and_byte_identical_checkout_from_the_remote(dvc_repo, catalog_with_selection,
                                                                  tmp_path):
    catalog, sid = catalog_with_selection
    record = create_release(catalog, sid[:6], "v1", repo_root=dvc_repo)
    release_dir = dvc_repo / "releases" / "v1"
    assert (dvc_repo / "releases" / "v1.dvc").exists()
    assert "/v1" in (dvc_repo / "releases" / ".gitignore").read_text()
    assert record["remote"] == "local" and record["n_rows"] == 6
    original = _bytes(release_dir)
    assert set(original) == {"data.parquet", "lineage.json", "README.md"}

    data = pq.read_table(release_dir / "data.parquet")
    assert data.column("id").to_pylist() == ["ex007", "ex003", "ex021", "ex012", "ex030", "ex005"]
    assert data.column("selection_rank").to_pylist() == list(range(6))
    assert {"features", "label", "domain", "selection_weight"} <= set(data.column_names)
    lineage = json.loads((release_dir / "lineage.json").read_text())
    assert lineage["lineage"]["config"] == {"selector": "random", "seed": 3, "budget": 6}
    assert lineage["metrics"][0]["mean"] == pytest.approx(0.63)
    card = (release_dir / "README.md").read_text()
    assert "# Dataset release v1" in card and "Label mix" in card and "Domain mix" in card
    assert "0.6300" in card and '"selector": "random"' in card

    remote_objects = list((tmp_path / "remote").rglob("*"))
    assert sum(p.is_file() for p in remote_objects) == 4  # 3 files + the directory listing

    # The catalog knows the release, its members and the md5 of every file.
    shown = catalog.release("v1")
    assert {f["relpath"] for f in shown["files"]} == set(original)
    assert catalog.releases_containing("ex021").column("version").to_pylist() == ["v1"]
    assert catalog.releases_containing("ex000").num_rows == 0

    # Tamper with the workspace copy and drop the local cache: the restore must come from the
    # remote and match the release byte for byte.
    (release_dir / "data.parquet").write_bytes(b"tampered")
    shutil.rmtree(dvc_repo / ".dvc" / "cache")
    out = tmp_path / "restored"
    files = checkout_release(catalog, "v1", out, repo_root=dvc_repo)
    assert _bytes(out) == original and len(files) == 3
    assert not list((dvc_repo / "releases").glob(".restore-*"))

    with pytest.raises(CurationError, match="not empty"):
        checkout_release(catalog, "v1", out, repo_root=dvc_repo)
    with pytest.raises(CurationError, match=r"no release 'v9'.*known: \['v1'\]"):
        checkout_release(catalog, "v9", tmp_path / "other", repo_root=dvc_repo)


def test_releasing_an_existing_version_is_refused_and_changes_nothing(dvc_repo,
                                                                      catalog_with_selection,
                                                                      tmp_path):
    catalog, sid = catalog_with_selection
    create_release(catalog, sid, "v1", repo_root=dvc_repo)
    before = _bytes(dvc_repo / "releases")
    with pytest.raises(CurationError, match="release 'v1' already exists.*immutable"):
        create_release(catalog, sid, "v1", repo_root=dvc_repo)
    # A second catalog that has never seen v1 is refused by the repository itself.
    other = Catalog(tmp_path / "other.duckdb")
    pool_row = catalog.pool(catalog.selection(sid)["pool_id"])
    pool_table = pq.read_table(pool_row["path"])
    other.record_pool(validate_table(pool_table, source="pool"), "pool", path=pool_row["path"])
    other.record_selection(_selection_from(catalog, sid), catalog.selection(sid)["lineage"])
    with pytest.raises(CurationError, match="already exists.*v1"):
        create_release(other, sid, "v1", repo_root=dvc_repo)
    assert _bytes(dvc_repo / "releases") == before
    assert catalog.releases().num_rows == 1


def _selection_from(catalog: Catalog, sid: str) -> Selection:
    members = catalog.members("selection", sid)
    ids = np.asarray(members.column("id").to_pylist(), dtype=object)
    return Selection(ids, np.arange(len(ids)), members.column("weight").to_numpy(),
                     members.column("score").to_numpy())


@pytest.mark.parametrize("version, message", [
    ("v 1", "must be 1-64 letters"), ("../v1", "must be 1-64 letters"), ("", "must be 1-64"),
    ("v1\n", "must be 1-64 letters"), ("v1\nv2", "must be 1-64 letters")])
def test_bad_versions_fail_before_anything_is_written(dvc_repo, catalog_with_selection, version,
                                                     message):
    catalog, sid = catalog_with_selection
    with pytest.raises(CurationError, match=message):
        create_release(catalog, sid, version, repo_root=dvc_repo)
    assert not (dvc_repo / "releases").exists()


def test_missing_remote_and_missing_repo_fail_clearly(catalog_with_selection, tmp_path):
    catalog, sid = catalog_with_selection
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CurationError, match="not inside a DVC repository"):
        create_release(catalog, sid, "v1", repo_root=plain)
    init_dvc_repo(plain)
    with pytest.raises(CurationError, match="no DVC remote configured"):
        create_release(catalog, sid, "v1", repo_root=plain)
    with pytest.raises(CurationError, match="remote 'backup' is not configured"):
        create_release(catalog, sid, "v1", repo_root=plain, remote="backup")
    assert not (plain / "releases").exists()


def test_a_distilled_set_releases_as_written_with_its_soft_labels(dvc_repo,
                                                                   catalog_with_selection,
                                                                   tmp_path):
    """Trajectory-matched rows have their own ids and inputs: the release keeps them, and the
    catalog knows which pool examples they came from."""
    from curation.distill import DistilledSet, write_distilled
    from curation.release import register_distilled_file

    catalog, sid = catalog_with_selection
    selection = catalog.selection(sid)
    soft = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 1.0, 0.0]])
    distilled = DistilledSet(np.array(["tm-0", "tm-1", "tm-2"], dtype=object),
                             np.array(["ex021", "ex007", "ex012"], dtype=object),
                             np.full((3, 5), 0.5, np.float32), np.array([1, 3, 0]),
                             soft.astype(np.float16), {"config": {"method": "tm"}})
    path = write_distilled(tmp_path / "distilled" / "distilled.parquet", distilled)
    (path.parent / "lineage.json").write_text(json.dumps(
        {"config": {"method": "tm", "labels": "soft"}, "pool_id": selection["pool_id"]}))
    did = register_distilled_file(catalog, path)
    assert catalog.distilled_set(did[:8])["method"] == "tm"
    assert catalog.members("distilled", did).column("id").to_pylist() == \
        ["ex021", "ex007", "ex012"]

    record = create_release(catalog, did, "d1", repo_root=dvc_repo, kind="distilled")
    data = pq.read_table(dvc_repo / "releases" / "d1" / "data.parquet")
    assert data.equals(pq.read_table(path))  # the rows as written, synthetic inputs included
    assert record["n_rows"] == 3
    card = (dvc_repo / "releases" / "d1" / "README.md").read_text()
    assert "**tm** distillation" in card and "soft_label" in card
    assert catalog.releases_containing("ex007").column("version").to_pylist() == ["d1"]

    stray = DistilledSet(np.array(["x"], dtype=object), np.array(["not-in-pool"], dtype=object),
                         np.zeros((1, 5), np.float32), np.array([0]),
                         np.ones((1, 4), np.float16) / 4, {})
    bad = write_distilled(tmp_path / "bad" / "distilled.parquet", stray)
    (bad.parent / "lineage.json").write_text(json.dumps({"pool_id": selection["pool_id"]}))
    with pytest.raises(CurationError, match="source ids of distilled set .* are not in the pool"):
        create_release(catalog, register_distilled_file(catalog, bad), "d2", repo_root=dvc_repo,
                       kind="distilled")
    assert not (dvc_repo / "releases" / "d2").exists()
