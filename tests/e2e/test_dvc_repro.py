"""``dvc repro`` of the project's ``dvc.yaml`` (demo data -> selections -> evaluations) in a
temp git + DVC repository, on a small targeted-text scenario.

dvc.yaml hard-codes the demo scenario's size (``curation demo-data`` defaults: a 3,000-document
pool and every sci.* test document, minutes of MiniLM embedding on 2 cores), so the test runs
the real file with one edit: the demo_data command gets small --pool-size/--target-size/
--test-size. Every other stage is run as written.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.pool import validate_table
from tests.conftest import REPO, init_dvc_repo

pytestmark = pytest.mark.slow

METHODS = ("random", "less", "gtp")
DEMO_CMD = "curation demo-data --scenario targeted-text --out data/demo"
# The sizes of tiny_run_config("targeted-text"), so test_demo_job and this test embed the same
# documents once per session (the shared embeddings cache).
SMALL = "--pool-size 200 --target-size 16 --test-size 120"


def _dvc_repro(repo: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _outputs(repo: Path) -> dict[str, int]:
    """Every file under data/ and its modification time in nanoseconds."""
    return {str(p.relative_to(repo)): p.stat().st_mtime_ns
            for p in sorted((repo / "data").rglob("*")) if p.is_file()}


def test_dvc_repro_builds_the_chain_and_a_second_repro_is_a_no_op(home):
    stages = (REPO / "dvc.yaml").read_text()
    assert stages.count(DEMO_CMD) == 1, "dvc.yaml's demo_data command changed; update this test"
    repo = init_dvc_repo(home / "project")
    (repo / "dvc.yaml").write_text(stages.replace(DEMO_CMD, f"{DEMO_CMD} {SMALL}"))
    # `curation` from this interpreter's environment, importing this checkout's code.
    env = {**os.environ, "CURATION_HOME": str(home / "curation_home"), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    assert shutil.which("curation", path=env["PATH"]), "no curation entry point beside python"

    first = _dvc_repro(repo, env)
    expected_stages = ["demo_data", *(f"{s}@{m}" for s in ("select", "evaluate") for m in METHODS)]
    for stage in expected_stages:
        assert f"Running stage '{stage}'" in first.stdout, first.stdout

    demo = repo / "data" / "demo"
    splits = {name: validate_table(pq.read_table(demo / f"{name}.parquet"), source=name)
              for name in ("pool", "target", "test")}
    assert [len(splits[n]) for n in ("pool", "target", "test")] == [200, 16, 120]
    assert all(split.input_column == "text" for split in splits.values())
    pool_ids = set(splits["pool"].ids)
    for method in METHODS:
        selection = pq.read_table(repo / "data" / "selections" / f"{method}.parquet")
        assert selection.column_names == ["id", "weight", "score", "rank"]
        assert selection.num_rows == 10  # --budget 0.05 of 200
        assert set(selection.column("id").to_pylist()) <= pool_ids
        assert sorted(selection.column("rank").to_pylist()) == list(range(10))
        lineage = json.loads((repo / "data" / "selections" / f"{method}.lineage.json").read_text())
        assert lineage["selector"] == method and lineage["k"] == 10
        evaluation = json.loads((repo / "data" / "evaluations" / f"{method}.json").read_text())
        assert 0.0 <= evaluation["test_accuracy_mean"] <= 1.0 and evaluation["n_train"] == 10
    lock = (repo / "dvc.lock").read_text()
    assert all(f"{stage}:" in lock for stage in expected_stages)

    before = _outputs(repo)
    second = _dvc_repro(repo, env)
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date." in second.stdout, second.stdout
    assert _outputs(repo) == before
