"""Every bad input of a split, a selection, an output path or a number list, driven through the
CLI in process: exit status 2, exactly one line on stderr naming the file or field, and not one
file written or changed anywhere under the test's directory (data, outputs, work dir, home)."""

import json
import os
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.errors import CurationError
from curation.pool import features_table, load_pool


def _write(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny splits and bad files under ``root/data``; ``root/afile`` is a plain file."""
    root = tmp_path_factory.mktemp("bad-input")
    data = root / "data"
    data.mkdir()
    x = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    y = np.arange(30) % 3
    ids = [f"p{i}" for i in range(30)]
    _write(data / "pool.parquet", features_table(ids, x, labels=y))
    _write(data / "test.parquet", features_table([f"t{i}" for i in range(9)], x[:9], labels=y[:9]))
    _write(data / "test_width3.parquet",
           features_table([f"t{i}" for i in range(9)], x[:9, :3], labels=y[:9]))
    _write(data / "test_unseen.parquet",
           features_table([f"t{i}" for i in range(9)], x[:9], labels=y[:9] + [0, 0, 7] * 3))
    _write(data / "target_unseen.parquet",
           features_table([f"g{i}" for i in range(3)], x[:3], labels=[0, 5, 6]))
    six = {"id": [f"p{i}" for i in range(6)], "label": [0, 1, 2, 0, 1, 2]}
    _write(data / "features_strings.parquet", pa.table({**six, "features": [["a", "b"]] * 6}))
    _write(data / "features_numeric_strings.parquet",
           pa.table({**six, "features": [["1.5", "2"]] * 6}))
    _write(data / "label_huge.parquet",
           features_table(six["id"], x[:6], labels=[0, 1, 10**12, 0, 1, 2]))
    _write(data / "text_empty.parquet", pa.table({**six, "text": ["", " ", "\n", "", "", ""]}))
    split = datasets.Dataset.from_dict({**six, "text": [f"doc {i}" for i in range(6)]})
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(data / "dsdict"))
    (data / "features_strings.jsonl").write_text("\n".join(
        json.dumps({"id": f"p{i}", "label": i % 2, "features": ["x", "y"]}) for i in range(4)))
    (data / "sel_garbage.parquet").write_bytes(os.urandom(64))
    (data / "sel.csv").write_text("id,weight\np1,1\np2,1\n")
    _write(data / "sel_dup.parquet", pa.table({"id": ["p1", "p1", "p2"]}))
    _write(data / "sel_nan.parquet", pa.table({"id": ["p1", "p2", "p3"],
                                               "weight": [1.0, float("nan"), 1.0]}))
    _write(data / "sel_negative.parquet", pa.table({"id": ["p1", "p2", "p3"],
                                                    "weight": [1.0, -2.0, 1.0]}))
    _write(data / "sel_int_ids.parquet", pa.table({"id": [1, 2, 3]}))
    _write(data / "sel.parquet", pa.table({"id": ids[:12]}))
    (root / "afile").write_text("not a directory\n")
    (root / "adir.parquet").mkdir()
    return root


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


D = "{root}/data"
POOL, TEST = f"{D}/pool.parquet", f"{D}/test.parquet"
OUT_FILE, OUT_DIR, WORK = "{root}/out/s.parquet", "{root}/out/dir", "{root}/work"


def _select(pool: str = POOL, out: str = OUT_FILE, work: str = WORK, *extra: str) -> list[str]:
    return ["select", "--pool", pool, "--method", "random", "--budget", "3", "--out", out,
            "--work-dir", work, *extra]


def _evaluate(selection: str = f"{D}/sel.parquet", test: str = TEST, *extra: str) -> list[str]:
    return ["evaluate", "--pool", POOL, "--selection", selection, "--test", test, "--seeds", "0",
            "--work-dir", WORK, *extra]


def _distill(*extra: str, out: str = OUT_DIR, test: str = TEST, work: str = WORK) -> list[str]:
    return ["distill", "--pool", POOL, "--test", test, "--per-class", "2", "--out", out,
            "--work-dir", work, *extra]


def _benchmark(*extra: str, out: str = OUT_DIR, work: str = WORK) -> list[str]:
    return ["benchmark", "--methods", "random", "--seeds", "1", "--out", out, "--work-dir",
            work, *extra]


FILES = ["--pool", POOL, "--test", TEST]
SCENARIO = ["--scenario", "digits", "--pool-size", "60", "--test-size", "20"]

CASES = {
    # pool / target / test files
    "features strings": (_select(f"{D}/features_strings.parquet"),
                         "features_strings.parquet: column 'features' must hold numbers"),
    "features numeric strings": (_select(f"{D}/features_numeric_strings.parquet"),
                                 "column 'features' must hold numbers (list<float32>)"),
    "features strings in jsonl": (_select(f"{D}/features_strings.jsonl"),
                                  "features_strings.jsonl: column 'features' must hold numbers"),
    "label 10**12": (_select(f"{D}/label_huge.parquet"),
                     "label_huge.parquet: column 'label' must be class indices 0..9999"),
    "all-empty text": (_select(f"{D}/text_empty.parquet"),
                       "text_empty.parquet: column 'text' is empty in every row"),
    "DatasetDict directory": (_select(f"{D}/dsdict"),
                              "is a datasets DatasetDict with splits ['train', 'test']"),
    "target labels unseen": (["select", "--pool", POOL, "--target", f"{D}/target_unseen.parquet",
                              "--method", "gtp", "--budget", "3", "--out", OUT_FILE,
                              "--work-dir", WORK],
                             "target_unseen.parquet: 2 target label(s) never occur in the pool"),
    "test labels unseen": (_evaluate(test=f"{D}/test_unseen.parquet"),
                           "test_unseen.parquet: 1 test label(s) never occur in the pool"),
    "test width evaluate": (_evaluate(test=f"{D}/test_width3.parquet"),
                            "test_width3.parquet: test features have width 3 but the pool's"),
    "test width distill": (_distill(test=f"{D}/test_width3.parquet"),
                           "test_width3.parquet: test features have width 3 but the pool's"),
    "test width benchmark": (_benchmark("--pool", POOL, "--test", f"{D}/test_width3.parquet"),
                             "test features have width 3"),
    # selection files
    "selection garbage": (_evaluate(f"{D}/sel_garbage.parquet"),
                          "sel_garbage.parquet is not a Parquet file"),
    "selection csv": (_evaluate(f"{D}/sel.csv"), "sel.csv is not a Parquet file"),
    "selection duplicate ids": (_evaluate(f"{D}/sel_dup.parquet"),
                                "sel_dup.parquet: column 'id' has 1 duplicate values"),
    "selection NaN weight": (_evaluate(f"{D}/sel_nan.parquet", TEST, "--use-weights"),
                             "sel_nan.parquet: column 'weight' must be finite and non-negative"),
    "selection negative weight": (_evaluate(f"{D}/sel_negative.parquet"),
                                  "sel_negative.parquet: column 'weight' must be finite"),
    "selection int ids": (_evaluate(f"{D}/sel_int_ids.parquet"),
                          "sel_int_ids.parquet: column 'id' must be strings"),
    "selection is a directory": (_evaluate("{root}/adir.parquet"), "is a directory"),
    "distill selection garbage": (_distill("--selection", f"{D}/sel_garbage.parquet"),
                                  "sel_garbage.parquet is not a Parquet file"),
    "distill selection duplicates": (_distill("--selection", f"{D}/sel_dup.parquet"),
                                     "sel_dup.parquet: column 'id' has 1 duplicate values"),
    # output paths
    "select --out a directory": (_select(out="{root}/adir.parquet"),
                                 "--out {root}/adir.parquet is a directory"),
    "select --out under /proc": (_select(out="/proc/curation/s.parquet"),
                                 "--out /proc/curation/s.parquet: cannot write in /proc"),
    "select --out under a file": (_select(out="{root}/afile/s.parquet"),
                                  "{root}/afile is a file, not a directory"),
    "select --work-dir a file": (_select(work="{root}/afile"), "--work-dir {root}/afile is a file"),
    "evaluate --out a directory": (_evaluate(f"{D}/sel.parquet", TEST, "--out", "{root}/adir.parquet"),
                                   "--out {root}/adir.parquet is a directory"),
    "evaluate --work-dir a file": (["evaluate", "--pool", POOL, "--selection", f"{D}/sel.parquet",
                                    "--test", TEST, "--work-dir", "{root}/afile"],
                                   "--work-dir {root}/afile is a file"),
    "distill --out a file": (_distill(out="{root}/afile"), "--out {root}/afile is a file"),
    "distill --out under /proc": (_distill(out="/proc/curation"), "cannot write in /proc"),
    "distill --work-dir a file": (_distill(work="{root}/afile"), "--work-dir {root}/afile"),
    "benchmark --out a file": (_benchmark(*FILES, out="{root}/afile"), "--out {root}/afile is a file"),
    "benchmark --work-dir a file": (_benchmark(*FILES, work="{root}/afile"), "--work-dir"),
    "datastore --out a file": (["datastore", "build", "--pool", POOL, "--out", "{root}/afile"],
                               "--out {root}/afile is a file"),
    "datastore --work-dir a file": (["datastore", "build", "--pool", POOL, "--out", OUT_DIR,
                                     "--work-dir", "{root}/afile"], "--work-dir {root}/afile"),
    "demo-data --out a file": (["demo-data", "--scenario", "digits", "--pool-size", "60",
                                "--target-size", "10", "--out", "{root}/afile"],
                               "--out {root}/afile is a file"),
    # number lists and benchmark options (nothing under --out, not even out/data)
    "benchmark --budgets empty": (_benchmark(*FILES, "--budgets", ""), "--budgets must name"),
    "benchmark --budgets nan": (_benchmark(*FILES, "--budgets", "0.1,nan"),
                                "--budgets must be finite"),
    "benchmark budget over the scenario": (_benchmark(*SCENARIO, "--budgets", "500"),
                                           "budget 500 is larger than the pool (60 examples)"),
    "benchmark --test-size -1": (_benchmark("--scenario", "digits", "--test-size", "-1"),
                                 "scenario 'test_size'"),
    "benchmark --pool-size with files": (_benchmark(*FILES, "--pool-size", "10"),
                                         "--pool-size and --test-size size a --scenario"),
    "evaluate --seeds negative": (_evaluate(f"{D}/sel.parquet", TEST, "--seeds", "-1"),
                                  "--seeds must be non-negative"),
    "distill --seeds empty": (_distill("--seeds", ""), "--seeds must name at least one seed"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(root, name, monkeypatch):
    args, message = CASES[name]
    monkeypatch.setenv("CURATION_HOME", str(root / "home"))
    before = _tree(root)
    result = CliRunner().invoke(app, [a.format(root=root) for a in args])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(lines) == 1 and message.format(root=root) in lines[0], result.stderr
    assert _tree(root) == before


def test_json_and_csv_pools_are_read_without_a_datasets_cache(tmp_path, monkeypatch):
    """The readers write nothing outside the project: no ~/.cache/huggingface."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    rows = [{"id": f"{i}", "label": i % 2, "text": f"document {i}"} for i in range(4)]
    (tmp_path / "pool.json").write_text(json.dumps(rows))
    (tmp_path / "pool.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "pool.csv").write_text("id,label,text\n" + "".join(
        f"{r['id']},{r['label']},{r['text']}\n" for r in rows))
    hashes = {load_pool(tmp_path / f"pool.{ext}").content_hash for ext in ("json", "jsonl", "csv")}
    assert len(hashes) == 1  # numeric-looking csv ids stay strings
    assert not (tmp_path / "user").exists()


def test_a_json_array_of_non_objects_is_one_line(tmp_path):
    (tmp_path / "pool.json").write_text("[1, 2]")
    with pytest.raises(CurationError, match="pool.json: a JSON array must hold one object"):
        load_pool(tmp_path / "pool.json")
