"""SIGKILL at each stage of ``curation select``, ``curation datastore build`` and ``curation
distill``, each kill followed by a re-run that resumes (and is itself killed at the next
stage): the last re-run ends with the same bytes as an uninterrupted run and no temp file left.

The kills are real (``tests/e2e/kill_harness.py``: real processes, SIGKILL at a rename). Each
chain runs in the home of its uninterrupted reference run, after that home is removed, so
recorded paths agree byte for byte.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.pool import features_table
from tests.conftest import REPO

pytestmark = pytest.mark.slow

# (glob of the renamed path, before/after the rename, which match) per stage, in run order.
SELECT_STAGES = [
    ("*/proxies/*/checkpoint-004.safetensors", "before", 1),  # warm-up half done
    ("*/proxies/*/proxy.json", "before", 1),  # checkpoints written, proxy manifest not
    ("*/datastores/*/shard-00000.npy", "before", 1),  # a shard mid-write
    ("*/datastores/*/shard-00000.sha256", "after", 1),  # shard confirmed, no manifest
    ("*/datastores/*/manifest.json", "before", 1),  # all shards, no manifest
    ("*/out/sel.lineage.json", "after", 1),  # lineage written, selection not
    ("*/out/sel.parquet", "before", 1),  # the selection mid-write
]
DATASTORE_STAGES = [
    ("*/store/shard-00001.npy", "before", 1),
    ("*/store/shard-00002.sha256", "after", 1),
    ("*/store/manifest.json", "before", 1),
    ("*/store/target/shard-00000.npy", "before", 1),
    ("*/store/target/manifest.json", "before", 1),
]
DISTILL_STAGES = [
    ("*/proxies/*/checkpoint-002.safetensors", "before", 1),  # expert trajectory half done
    ("*/dist/distilled.parquet", "before", 1),
    ("*/dist/distilled.parquet", "after", 1),  # set written, not evaluated
    ("*/dist/evaluation.json", "after", 1),  # evaluated, no lineage
]
# Files that record timings or creation times, not results.
TIMED = {"build-stats.json", ".lock"}
# The catalog is a DuckDB file: its bytes depend on how many transactions ran, so it is
# compared by its rows (one selection recorded however often select was killed), not bytes.
CATALOG = {"catalog.duckdb", "catalog.duckdb.wal"}


def _commands(data: Path) -> dict[str, list[str]]:
    pool, test, target = (str(data / f"{n}.parquet") for n in ("pool", "test", "target"))
    return {
        "select": ["select", "--pool", pool, "--target", target, "--method", "gtp", "--budget",
                   "10", "--dim", "16", "--checkpoints", "2", "--out", "{home}/out/sel.parquet"],
        "datastore": ["datastore", "build", "--pool", pool, "--target", target, "--out",
                      "{home}/store", "--dim", "16", "--shard-size", "20", "--checkpoints", "2"],
        "distill": ["distill", "--pool", pool, "--test", test, "--per-class", "2",
                    "--expert-epochs", "3", "--seeds", "0", "--out", "{home}/dist"],
    }


def _plan(tmp: Path, commands: dict[str, list[str]], stages: dict[str, list]) -> list[dict]:
    plan = []
    for name, args in commands.items():
        home = tmp / name
        argv = [a.format(home=home) for a in args]
        run = {"run": argv, "env": {"CURATION_HOME": str(home)}, "list": str(home)}
        plan += [{**run, "kill": None}, {"copy": [str(home), str(tmp / f"{name}-reference")]},
                 {"remove": str(home)}]
        plan += [{**run, "kill": {"path": p, "when": w, "nth": n}} for p, w, n in stages[name]]
        plan.append({**run, "kill": None})
    return plan


def _contents(home: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(p for p in home.rglob("*") if p.is_file() and p.name not in TIMED | CATALOG):
        data = path.read_bytes()
        if path.suffix == ".json" and b"created_at" in data:
            data = json.dumps({k: v for k, v in json.loads(data).items() if k != "created_at"},
                              sort_keys=True).encode()
        files[str(path.relative_to(home))] = data
    return files


def test_killed_at_every_stage_resumes_to_the_same_bytes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    y = np.arange(60) % 3
    for name, rows in (("pool", range(60)), ("test", range(12)), ("target", range(6))):
        rows = list(rows)
        pq.write_table(features_table([f"{name}{i}" for i in rows], x[rows], labels=y[rows]),
                       data / f"{name}.parquet")
    stages = {"select": SELECT_STAGES, "datastore": DATASTORE_STAGES, "distill": DISTILL_STAGES}
    commands = _commands(data)
    plan_path, results_path = tmp_path / "plan.json", tmp_path / "results.json"
    plan_path.write_text(json.dumps(_plan(tmp_path / "runs", commands, stages)))
    harness = subprocess.run(
        [sys.executable, "-m", "tests.e2e.kill_harness", str(plan_path), str(results_path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=600)
    assert harness.returncode == 0, harness.stderr[-3000:]
    results = iter(json.loads(results_path.read_text()))
    for name in commands:
        reference = next(results)
        assert reference["exit"] == 0, (name, harness.stderr[-3000:])
        for stage in stages[name]:
            killed = next(results)
            assert killed["signal"] == 9, f"{name}: stage {stage} was never reached"
            if stage[1] == "before":  # killed mid-write: its temp file is still there
                assert any(f.endswith(".tmp") for f in killed["files"]), (name, stage)
            if name == "select" and stage != SELECT_STAGES[-1]:
                assert "out/sel.parquet" not in killed["files"]
        final = next(results)
        assert final["exit"] == 0, (name, harness.stderr[-3000:])
        home, ref = tmp_path / "runs" / name, tmp_path / "runs" / f"{name}-reference"
        assert not [f for f in final["files"] if f.endswith(".tmp")], (name, final["files"])
        got, want = _contents(home), _contents(ref)
        assert sorted(got) == sorted(want), name
        # one file at a time: a diff of whole byte strings would take pytest minutes to print
        for file in want:
            assert got[file] == want[file], f"{name}: {file} differs from the uninterrupted run"
        assert _catalog_rows(home) == _catalog_rows(ref), name


def _catalog_rows(home: Path) -> list[tuple]:
    """The selections recorded in the home's catalog (none when the command records none)."""
    path = home / "catalog.duckdb"
    if not path.exists():
        return []
    import duckdb

    with duckdb.connect(str(path), read_only=True) as db:
        return db.execute(
            "SELECT s.selection_id, s.config_hash, s.k, s.pool_id, s.datastore_id, count(m.id) "
            "FROM selections s LEFT JOIN selection_members m USING (selection_id) "
            "GROUP BY ALL ORDER BY 1").fetchall()
