"""The release workflow and canned catalog queries from the command line, in a temp git repo
with DVC and a local-directory remote."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from tests.conftest import init_dvc_repo

CLI = [sys.executable, "-m", "curation.cli"]


def run(*args, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CURATION_HOME": str(home / "curation_home"), "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.fixture
def selections(home, digits_splits) -> dict[str, Path]:
    """Two random subsets of the digits pool, written by `curation select` (in-process)."""
    runner = CliRunner()
    out = {}
    for seed in (0, 1):
        out[seed] = home / f"random{seed}.parquet"
        result = runner.invoke(app, ["select", "--pool", str(digits_splits.pool), "--method",
                                     "random", "--budget", "40", "--seed", str(seed),
                                     "--out", str(out[seed])])
        assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_release_create_list_show_refuse_and_checkout_byte_identical(home, digits_splits,
                                                                     selections):
    repo = init_dvc_repo(home / "project", home / "dvc-remote")
    made = run("release", "create", selections[0], "--pool", digits_splits.pool,
               "--version", "v1", cwd=repo, home=home)
    assert made.returncode == 0, made.stderr
    assert "released v1: 40 rows" in made.stdout
    release_dir = repo / "releases" / "v1"
    original = {p.name: p.read_bytes() for p in release_dir.iterdir()}
    assert set(original) == {"data.parquet", "lineage.json", "README.md"}
    lineage = json.loads(original["lineage.json"])
    assert lineage["lineage"]["selector"] == "random" and lineage["rows"] == 40

    runner = CliRunner(env={"CURATION_HOME": str(home / "curation_home"), "COLUMNS": "200"})
    listed = runner.invoke(app, ["release", "list"])
    assert listed.exit_code == 0 and "v1" in listed.output and "random" in listed.output
    shown = runner.invoke(app, ["release", "show", "v1"])
    assert shown.exit_code == 0 and "data.parquet" in shown.output and "local" in shown.output

    again = run("release", "create", selections[1], "--pool", digits_splits.pool,
                "--version", "v1", cwd=repo, home=home)
    assert again.returncode == 2
    assert "release 'v1' already exists" in again.stderr and "immutable" in again.stderr
    assert "Traceback" not in again.stderr
    assert {p.name: p.read_bytes() for p in release_dir.iterdir()} == original

    # Gone from the workspace and the local cache: the checkout comes from the remote.
    shutil.rmtree(release_dir)
    shutil.rmtree(repo / ".dvc" / "cache")
    restored = home / "restored"
    checkout = run("release", "checkout", "v1", "--out", restored, cwd=repo, home=home)
    assert checkout.returncode == 0, checkout.stderr
    assert {p.name: p.read_bytes() for p in restored.iterdir()} == original

    missing = runner.invoke(app, ["release", "checkout", "v7", "--out", str(home / "x"),
                                  "--repo", str(repo)])
    assert missing.exit_code == 2 and "no release 'v7'" in missing.output


def test_canned_catalog_queries(home, digits_splits, selections):
    repo = init_dvc_repo(home / "project", home / "dvc-remote")
    runner = CliRunner(env={"COLUMNS": "200"})

    def invoke(*args):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    for seed, version in ((0, "r0"), (1, "r1")):
        invoke("release", "create", selections[seed], "--pool", digits_splits.pool,
               "--version", version, "--repo", repo)
    ids = {s: pq.read_table(p).column("id").to_pylist() for s, p in selections.items()}
    both = sorted(set(ids[0]) & set(ids[1]))
    only_first = sorted(set(ids[0]) - set(ids[1]))

    assert "r0" in invoke("catalog", "releases-with", only_first[0]) and \
        "r1" not in invoke("catalog", "releases-with", only_first[0])
    if both:
        assert {"r0", "r1"} <= set(invoke("catalog", "releases-with", both[0]).split())

    listing = invoke("catalog", "selections")
    sids = [line.split("│")[1].strip() for line in listing.splitlines()
            if line.startswith("│") and "random" in line]
    assert len(sids) == 2
    overlap = invoke("catalog", "overlap", sids[0][:8], sids[1][:8])
    jaccard = len(both) / len(set(ids[0]) | set(ids[1]))
    assert f"{jaccard:.4g}" in overlap and str(len(both)) in overlap

    mix = invoke("catalog", "mix", sids[0], "--by", "label")
    assert "subset_share" in mix and "pool_share" in mix
    assert len([line for line in mix.splitlines() if line.startswith("│")]) == 10  # 10 digits

    registered = invoke("catalog", "register-config", "gtp", "--budget", "0.05",
                        "--param", "feature_kind=adam", "--param", "tol=1e-5")
    assert '"feature_kind": "adam"' in registered and '"tol": 1e-05' in registered
    assert "gtp" in invoke("catalog", "configs")

    bad = runner.invoke(app, ["catalog", "register-config", "gtp", "--budget", "0.05",
                              "--param", "magic=1"])
    assert bad.exit_code == 2 and "has no option(s) ['magic']" in bad.output
    bad = runner.invoke(app, ["catalog", "mix", sids[0], "--by", "color"])
    assert bad.exit_code == 2 and "mix 'by' must be one of" in bad.output


def test_a_selection_from_select_releases_without_pool_and_bad_lineage_is_one_line(
        home, digits_splits, selections):
    """`curation select` recorded the selection and its pool file in the catalog, so the
    release needs no --pool: by file or by catalog id."""
    repo = init_dvc_repo(home / "project", home / "dvc-remote")
    runner = CliRunner(env={"COLUMNS": "200"})
    listing = runner.invoke(app, ["catalog", "selections"])
    assert listing.exit_code == 0 and listing.stdout.count("random") == 2, listing.output
    made = runner.invoke(app, ["release", "create", str(selections[0]), "--version", "v1",
                               "--repo", str(repo)])
    assert made.exit_code == 0 and "released v1: 40 rows" in made.stdout, made.output
    sid = next(line.split("│")[1].strip() for line in listing.stdout.splitlines()
               if line.startswith("│") and "random" in line)
    made = runner.invoke(app, ["release", "create", sid[:8], "--version", "v2",
                               "--repo", str(repo)])
    assert made.exit_code == 0 and "released v2: 40 rows" in made.stdout, made.output

    newline = runner.invoke(app, ["release", "create", sid[:8], "--version", "v3\n",
                                  "--repo", str(repo)])
    assert newline.exit_code == 2 and "must be 1-64 letters" in newline.stderr
    broken = home / "broken.parquet"
    broken.write_bytes(selections[1].read_bytes())
    broken.with_suffix(".lineage.json").write_text("{not json")
    bad = runner.invoke(app, ["release", "create", str(broken), "--version", "v4",
                              "--repo", str(repo)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert bad.stderr.strip().startswith(f"error: {broken.with_suffix('.lineage.json')} is not "
                                         "a JSON lineage record")
    assert len(bad.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in (repo / "releases").iterdir()) == [
        ".gitignore", "v1", "v1.dvc", "v2", "v2.dvc"]
