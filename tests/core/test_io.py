"""Atomic writes that clean up after killed writers, and the output-path checks."""

import os
import subprocess
import sys

import pytest

from curation.errors import CurationError
from curation.io import _HOST, check_output_dir, check_output_file, write_json


def test_a_dead_writers_temp_is_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f".out.json.{_HOST}.{dead.stdout.strip()}.abc123.tmp"
    live = tmp_path / f".out.json.{_HOST}.{os.getppid()}.def456.tmp"
    other_host = tmp_path / f".out.json.elsewhere.{dead.stdout.strip()}.ghi789.tmp"
    for path in (stale, live, other_host):
        path.write_text("partial")
    write_json(tmp_path / "out.json", {"a": 1})
    assert not stale.exists() and live.exists() and other_host.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other_host.name, "out.json"])


def test_output_checks_refuse_what_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    assert check_output_file(tmp_path / "file", "--out") == tmp_path / "file"  # replaced later
    assert check_output_dir(tmp_path / "new" / "dir", "--out") == tmp_path / "new" / "dir"
    for check, path, message in [
        (check_output_file, tmp_path / "dir", "is a directory; expected a file path"),
        (check_output_dir, tmp_path / "file", "is a file; expected a directory"),
        (check_output_file, tmp_path / "file" / "x.parquet", "file is a file, not a directory"),
        (check_output_dir, "/proc/curation-test", "cannot write in /proc"),
    ]:
        with pytest.raises(CurationError, match=message):
            check(path, "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]  # nothing created
