"""``curation dedup`` as a user runs it: the kept pool and its groups, one-line errors."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.pool import features_table


@pytest.fixture
def planted(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 16))
    copies = base[:5] + 0.05 * rng.standard_normal((5, 16))
    ids = [f"r{i:02d}" for i in range(40)] + [f"r{i:02d}-copy" for i in range(5)]
    path = tmp_path / "pool.parquet"
    pq.write_table(features_table(ids, np.vstack([base, copies]), labels=[0] * 45,
                                  source=["s"] * 45), path)
    return path


def _dedup(tmp_path, *args):
    runner = CliRunner(env={"CURATION_HOME": str(tmp_path / "home"), "COLUMNS": "200"})
    return runner.invoke(app, ["dedup", *map(str, args)])


def test_kept_pool_and_groups_are_written(tmp_path, planted):
    out = tmp_path / "out" / "kept.parquet"
    result = _dedup(tmp_path, "--pool", planted, "--out", out, "--threshold", "0.9")
    assert result.exit_code == 0, result.output
    assert "kept 40 of 45 rows (5 near-duplicates in 5 groups" in result.output
    kept = pq.read_table(out)
    assert kept.column_names == ["id", "features", "label", "source"]
    assert kept.column("id").to_pylist() == [f"r{i:02d}" for i in range(40)]
    groups = pq.read_table(out.with_name("kept.groups.parquet")).to_pylist()
    assert groups[0] == {"group": 0, "kept_id": "r00", "removed_ids": ["r00-copy"]}


@pytest.mark.parametrize("args, message", [
    (["--threshold", "0"], "dedup 'threshold': Input should be greater than 0"),
    (["--on", "pixels"], "dedup 'on'"),
    (["--on", "embeddings"], "has no text to embed"),
    (["--on", "gradients"], "needs a gradient datastore"),
    (["--on", "gradients", "--store", "nowhere"], "datastore manifest not found"),
    (["--store", "nowhere"], "--store is read by --on gradients only"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, planted, args, message):
    out = tmp_path / "out" / "kept.parquet"
    result = _dedup(tmp_path, "--pool", planted, "--out", out, *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (out.parent.exists() and any(out.parent.iterdir()))


def test_a_failed_write_leaves_no_partial_file(tmp_path, planted, monkeypatch):
    import curation.dedup
    import curation.io

    def broken(table, where):
        where.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(curation.io.pq, "write_table", broken)
    out = tmp_path / "out" / "kept.parquet"
    with pytest.raises(OSError, match="disk full"):
        curation.dedup.write_dedup(curation.pool.load_pool(planted), _result(planted), out)
    assert list(out.parent.iterdir()) == []


def _result(path):
    from curation.dedup import find_duplicates
    from curation.pool import load_pool

    pool = load_pool(path)
    return find_duplicates(pool.ids, pool.features, 0.9)
