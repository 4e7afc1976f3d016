"""``curation distill`` as a user runs it: a real subprocess on real digits."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.test_cli import run

pytestmark = pytest.mark.slow


def test_distill_from_a_selection_writes_the_set_and_its_evaluation(home, digits_splits):
    selection = home / "sel.parquet"
    # A "selection" that ranks the pool backwards: distill must take its top per class.
    ids = pq.read_table(digits_splits.pool).column("id").to_pylist()[::-1]
    pq.write_table(pa.table({"id": ids, "rank": list(range(len(ids)))}), selection)
    out = home / "distilled"
    result = run("distill", "--pool", digits_splits.pool, "--test", digits_splits.test,
                 "--per-class", "2", "--labels", "soft", "--method", "real", "--selection",
                 selection, "--expert-epochs", "4", "--expert-lr", "0.01", "--top-k", "3", "--seeds", "0,1",
                 "--out", out, env_home=home)
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out / "distilled.parquet")
    assert table.column_names == ["id", "features", "label", "soft_label", "source_id"]
    labels = table.column("label").to_pylist()
    assert table.num_rows == 20 and sorted(labels) == sorted(list(range(10)) * 2)
    pool_labels = dict(zip(pq.read_table(digits_splits.pool).column("id").to_pylist(),
                           pq.read_table(digits_splits.pool).column("label").to_pylist(),
                           strict=True))
    for c in range(10):
        expected = [i for i in ids if pool_labels[i] == c][:2]
        assert [i for i, y in zip(table.column("id").to_pylist(), labels, strict=True)
                if y == c] == expected
    for row in table.column("soft_label").to_pylist():
        assert sum(v > 0 for v in row) <= 3 and abs(sum(row) - 1) < 1e-2
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["seeds"] == [0, 1] and len(evaluation["test_accuracies"]) == 2
    assert evaluation["test_accuracy_std"] == pytest.approx(np.std(evaluation["test_accuracies"]))
    assert 0.3 < evaluation["test_accuracy_mean"] <= 1
    assert (out / "grid.png").exists() and "soft labels" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--per-class", "0"], "distill 'per_class': Input should be greater than or equal to 1"),
    (["--per-class", "100"], "fewer than per_class=100"),
    (["--expert-epoch", "12"], "'expert_epoch' 12 is outside the expert trajectory"),
    (["--selection", "missing.parquet"], "selection file not found"),
    (["--model", "resnet"], "student 'kind': Input should be 'linear', 'mlp' or 'convnet'"),
    (["--model", "convnet", "--depth", "4"], "8x8 images are too small"),
])
def test_bad_distill_settings_are_one_clear_line_and_write_nothing(home, digits_splits, args,
                                                                  message):
    out = home / "distilled"
    result = run("distill", "--pool", digits_splits.pool, "--test", digits_splits.test,
                 *args, "--out", out, env_home=home)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()


def test_distill_help_names_every_choice(home):
    result = run("distill", "--help", env_home=home)
    assert result.returncode == 0
    for option in ("--per-class", "--labels", "--method", "--selection", "--temperature",
                   "--expert-epoch", "--seeds", "--out", "--model", "--width", "--depth",
                   "shuffled", "convnet"):
        assert option in result.stdout


def test_distill_with_a_convnet_student(home, digits_splits):
    out = home / "convnet"
    result = run("distill", "--pool", digits_splits.pool, "--test", digits_splits.test,
                 "--per-class", "1", "--labels", "hard", "--model", "convnet", "--width", "4",
                 "--seeds", "0", "--out", out, env_home=home)
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["model"] == "convnet" and 0.1 < evaluation["test_accuracy_mean"] <= 1
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["config"]["model"] == {"kind": "convnet", "hidden": 128, "width": 4,
                                          "depth": 2, "shape": [1, 8, 8]}
