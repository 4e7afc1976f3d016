"""The ``curation`` CLI as a user runs it: real subprocesses, real files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.pool import features_table

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "curation.cli"]


def run(*args: str, env_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CURATION_HOME": str(env_home / "curation_home")}
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)


def test_help_everywhere(home):
    for command in ([], ["demo-data"], ["select"], ["evaluate"], ["catalog", "query"],
                    ["catalog", "mix"], ["release", "create"], ["release", "checkout"]):
        result = run(*command, "--help", env_home=home)
        assert result.returncode == 0 and "Usage" in result.stdout, result.stderr


def test_demo_data_select_evaluate_round_trip(home):
    data = home / "data"
    made = run("demo-data", "--scenario", "digits", "--pool-size", "400", "--target-size", "30",
               "--test-size", "300", "--out", data, env_home=home)
    assert made.returncode == 0, made.stderr
    accuracies = {}
    for method in ("random", "less", "gtp"):
        out = home / f"{method}.parquet"
        selected = run("select", "--pool", data / "pool.parquet", "--target",
                       data / "target.parquet", "--method", method, "--budget", "0.1",
                       "--dim", "64", "--proxy", "mlp", "--out", out, env_home=home)
        assert selected.returncode == 0, selected.stderr
        table = pq.read_table(out)
        assert table.column_names == ["id", "weight", "score", "rank"] and table.num_rows == 40
        lineage = json.loads(out.with_suffix(".lineage.json").read_text())
        assert lineage["selector"] == method and lineage["k"] == 40
        result_json = home / f"{method}.json"
        evaluated = run("evaluate", "--pool", data / "pool.parquet", "--selection", out,
                        "--test", data / "test.parquet", "--seeds", "0,1", "--out", result_json,
                        env_home=home)
        assert evaluated.returncode == 0, evaluated.stderr
        accuracies[method] = json.loads(result_json.read_text())["test_accuracy_mean"]
    assert all(0.0 <= a <= 1.0 for a in accuracies.values())
    assert accuracies["random"] > 0.5  # 40 real digits train a usable classifier


def test_same_config_same_selection(home, digits_splits):
    outs = []
    for name in ("a", "b"):
        out = home / f"{name}.parquet"
        result = run("select", "--pool", digits_splits.pool, "--target", digits_splits.target,
                     "--method", "gtp", "--budget", "25", "--dim", "64", "--out", out,
                     env_home=home)
        assert result.returncode == 0, result.stderr
        outs.append(pq.read_table(out))
    assert outs[0].equals(outs[1])


def _bad_pools(tmp: Path) -> dict[str, Path]:
    good = features_table(["a", "b", "c"], np.ones((3, 2)), labels=[0, 1, 0])
    nan = np.ones((3, 2))
    nan[1, 0] = np.nan
    cases = {
        "no_id": good.drop_columns(["id"]),
        "no_label": good.drop_columns(["label"]),
        "no_input": good.drop_columns(["features"]),
        "dup_ids": good.set_column(0, "id", pa.array(["a", "a", "c"])),
        "nan": features_table(["a", "b", "c"], nan, labels=[0, 1, 0]),
    }
    paths = {}
    for name, table in cases.items():
        paths[name] = tmp / f"{name}.parquet"
        pq.write_table(table, paths[name])
    paths["good"] = tmp / "good.parquet"
    pq.write_table(good, paths["good"])
    return paths


@pytest.mark.parametrize("case, budget, message", [
    ("missing", "0.5", "pool file not found"),
    ("no_id", "0.5", "missing required column 'id'"),
    ("no_label", "0.5", "missing required column 'label'"),
    ("no_input", "0.5", "exactly one input column"),
    ("dup_ids", "0.5", "duplicate values"),
    ("nan", "0.5", "NaN or infinite"),
    ("good", "0", "budget must be > 0"),
    ("good", "-0.2", "budget must be > 0"),
    ("good", "10", "larger than the pool"),
])
def test_bad_input_is_one_clear_line_and_writes_nothing(home, case, budget, message):
    paths = _bad_pools(home)
    pool = paths.get(case, home / "missing.parquet")
    out = home / "out" / "selection.parquet"
    result = run("select", "--pool", pool, "--method", "random", f"--budget={budget}",
                 "--out", out, env_home=home)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not out.exists() and not out.with_suffix(".lineage.json").exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))


def test_selector_needing_a_target_says_so(home, digits_splits):
    result = run("select", "--pool", digits_splits.pool, "--method", "gtp", "--budget", "0.1",
                 "--out", home / "x.parquet", env_home=home)
    assert result.returncode == 2 and "needs --target" in result.stderr


def test_benchmark_command_writes_results_summary_and_plot(home, digits_splits):
    out = home / "bench"
    result = run("benchmark", "--pool", digits_splits.pool, "--test", digits_splits.test,
                 "--target", digits_splits.target, "--methods", "random,el2n,gtp",
                 "--budgets", "0.1", "--seeds", "1", "--dim", "32", "--out", out,
                 env_home=home)
    assert result.returncode == 0, result.stderr
    records = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in records} == {"full", "random", "el2n", "gtp"}
    assert (out / "plot.png").stat().st_size > 1000 and "gtp" in (out / "summary.md").read_text()
    assert not (out / "results.partial.json").exists()  # results.json holds every record
    # a checkpoint left by another grid is refused, not mixed in
    (out / "results.partial.json").write_text(json.dumps({"grid": "other", "records": []}))
    again = run("benchmark", "--pool", digits_splits.pool, "--test", digits_splits.test,
                "--target", digits_splits.target, "--methods", "random", "--budgets", "0.1",
                "--seeds", "1", "--dim", "32", "--out", out, "--resume", env_home=home)
    assert again.returncode == 2 and "another grid or other data" in again.stderr
    assert json.loads((out / "results.json").read_text()) == records


def test_benchmark_bad_method_lists_the_valid_ones(home, digits_splits):
    result = run("benchmark", "--pool", digits_splits.pool, "--test", digits_splits.test,
                 "--methods", "random,best", "--out", home / "bench", env_home=home)
    assert result.returncode == 2
    assert "valid methods are ['el2n', 'gtp', 'less', 'random']" in result.stderr
    assert not (home / "bench").exists()
