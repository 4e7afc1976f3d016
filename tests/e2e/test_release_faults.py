"""Releases under faults: a real SIGKILL at every stage of ``create_release`` and then a retry,
and six releases created at once into one repository."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.catalog import Catalog
from curation.io import sha256_file
from curation.lineage import selection_lineage
from curation.pool import features_table, validate_table
from curation.release import KILL_AT_ENV, create_release
from curation.selectors import Selection
from tests.conftest import REPO, init_dvc_repo

# The fault points of create_release before its catalog row, in order: inside DVC (staging
# exported and `dvc add`-ed), journaled with the .gitignore entry written, the directory
# renamed into place, the .dvc file renamed into place. A kill at each must leave the
# version free.
STAGES = ("added", "ignored", "directory-visible", "dvc-visible")
# A real subprocess: create_release as the CLI runs it, errors as one line and exit 2.
CREATE = """
import sys
from curation.catalog import Catalog
from curation.io import sha256_file
from curation.errors import CurationError
from curation.release import create_release
try:
    create_release(Catalog(sys.argv[1]), sys.argv[2], sys.argv[3], repo_root=sys.argv[4])
except CurationError as exc:
    sys.exit(f"error: {exc}")
"""


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Catalog, str]:
    """A git + DVC repository with a local remote, and a catalog holding one 6-row selection
    of a 40-row pool."""
    repo = init_dvc_repo(tmp_path / "project", tmp_path / "remote")
    rng = np.random.default_rng(0)
    table = features_table([f"ex{i:03d}" for i in range(40)], rng.normal(size=(40, 5)),
                           labels=np.arange(40) % 4)
    pool_path = tmp_path / "pool.parquet"
    pq.write_table(table, pool_path)
    pool = validate_table(table, source=str(pool_path))
    catalog = Catalog(tmp_path / "catalog.duckdb")
    catalog.record_pool(pool, "pool", path=pool_path)
    rows = np.array([7, 3, 21, 12, 30, 5])
    lineage = selection_lineage({"selector": "random", "seed": 3}, budget=6, k=6,
                                pool_id=pool.content_hash, datastore_id=None,
                                proxy_checkpoints=[], n_pool=40)
    sid = catalog.record_selection(Selection(pool.ids[rows], rows, np.ones(6), np.arange(6.0)),
                                   lineage)
    return repo, catalog, sid


def _start(project, version: str, kill_at: str | None = None) -> subprocess.Popen:
    repo, catalog, sid = project
    env = {**os.environ, "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.Popen([sys.executable, "-c", CREATE, str(catalog.path), sid, version,
                             str(repo)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def _versions(catalog: Catalog) -> list[str]:
    return sorted(catalog.query("SELECT version FROM releases").column("version").to_pylist())


def _visible(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "releases").iterdir() if not p.name.startswith("."))


@pytest.mark.slow
def test_a_release_killed_at_any_stage_leaves_its_version_free_and_the_retry_succeeds(project):
    repo, catalog, sid = project
    releases = repo / "releases"
    create_release(catalog, sid, "reference", repo_root=repo)
    # Each run is killed at the next stage; it first takes back what the last one left.
    for stage in STAGES:
        code, err = _finish(_start(project, "v1", kill_at=stage))
        assert code == -9, (stage, err)
        assert "v1" not in _versions(catalog), stage
        if stage not in ("directory-visible", "dvc-visible"):
            assert _visible(repo) == ["reference", "reference.dvc"], stage
    # The last retry gets through, and is killed just after its catalog row: the release
    # stands (only its staging directory is left), and the next run says so and sweeps up.
    code, err = _finish(_start(project, "v1", kill_at="recorded"))
    assert code == -9, err
    assert any(p.name.startswith(".staging-") for p in releases.iterdir())
    code, err = _finish(_start(project, "v1"))
    assert code == 1 and err.strip().splitlines()[-1].startswith(
        "error: release 'v1' already exists"), err

    assert _visible(repo) == ["reference", "reference.dvc", "v1", "v1.dvc"]
    assert sorted(p.name for p in releases.iterdir() if p.name.startswith(".")) == [".gitignore"]
    assert (releases / ".gitignore").read_text().split() == ["/reference", "/v1"]
    assert _versions(catalog) == ["reference", "v1"]
    counts = catalog.query("SELECT (SELECT count(*) FROM release_members WHERE version = 'v1') "
                           "AS m, (SELECT count(*) FROM release_files WHERE version = 'v1') AS f")
    assert counts.to_pylist() == [{"m": 6, "f": 3}]
    # What the retries wrote is what an uninterrupted run writes.
    assert (releases / "v1" / "data.parquet").read_bytes() == \
        (releases / "reference" / "data.parquet").read_bytes()
    lineages = [json.loads((releases / v / "lineage.json").read_text()) for v in ("reference", "v1")]
    for lineage in lineages:
        del lineage["version"], lineage["released_at"]
    assert lineages[0] == lineages[1]
    assert catalog.release("v1")["dvc_text"] == (releases / "v1.dvc").read_text()
    assert {f["sha256"] for f in catalog.release("v1")["files"]} == \
        {sha256_file(p) for p in (releases / "v1").iterdir()}


@pytest.mark.slow
def test_six_releases_at_once_into_one_repository_all_succeed(project):
    repo, catalog, _ = project
    versions = [f"p{i}" for i in range(6)]
    processes = [_start(project, v) for v in versions]
    results = [_finish(p) for p in processes]
    for code, err in results:
        assert code == 0 and "Traceback" not in err, err
    assert _versions(catalog) == versions
    assert catalog.query("SELECT count(*) AS n FROM release_members").to_pylist() == [{"n": 36}]
    assert _visible(repo) == sorted([*versions, *(f"{v}.dvc" for v in versions)])
    assert sorted((repo / "releases" / ".gitignore").read_text().split()) == \
        [f"/{v}" for v in versions]
