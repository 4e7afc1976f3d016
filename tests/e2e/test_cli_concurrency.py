"""Concurrent writers from the command line: cold `curation select` runs at once on one
CURATION_HOME wait for each other's proxy and datastore builds and reuse them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curation.cli import app
from tests.conftest import REPO


@pytest.mark.slow
def test_four_cold_selects_at_once_all_succeed_and_agree(tmp_path: Path, monkeypatch):
    from curation.demo_data import ScenarioConfig, write_scenario

    data = write_scenario(ScenarioConfig("digits", pool_size=120, target_size=12, test_size=30),
                          tmp_path / "data")
    home = tmp_path / "home"  # cold: nothing built yet
    # One thread each: four processes on a small machine, no OpenMP spin-waiting.
    env = {**os.environ, "PYTHONPATH": str(REPO), "CURATION_HOME": str(home),
           "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    runs = [subprocess.Popen(
        [sys.executable, "-m", "curation.cli", "select", "--pool", str(data.pool), "--target",
         str(data.target), "--method", "gtp", "--budget", "12", "--dim", "32", "--checkpoints",
         "2", "--out", str(tmp_path / f"gtp{i}.parquet")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    for code, err in results:
        assert code == 0 and "Traceback" not in err, err
    outputs = {(tmp_path / f"gtp{i}.parquet").read_bytes() for i in range(4)}
    assert len(outputs) == 1  # the same selection, from one shared build
    stores = [p for p in (home / "work" / "datastores").iterdir() if p.is_dir()]
    assert len(stores) == 2 and all((p / "manifest.json").exists() for p in stores)  # pool, target
    # Recorded in the catalog, as the assets record theirs.
    monkeypatch.setenv("CURATION_HOME", str(home))
    listed = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["catalog", "selections"])
    assert listed.exit_code == 0 and "gtp" in listed.stdout, listed.output
