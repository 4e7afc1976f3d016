"""The pool sensor and the nightly schedule, evaluated the way the Dagster daemon does."""

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines.definitions import defs
from pipelines.refresh import new_pool_files, nightly_refresh
from resources import PoolDropbox


@pytest.fixture
def dropbox(tmp_path: Path, digits_splits) -> Path:
    """A watched directory holding the target and test files that every pool is paired with."""
    directory = tmp_path / "incoming"
    directory.mkdir()
    shutil.copy(digits_splits.target, directory / "target.parquet")
    shutil.copy(digits_splits.test, directory / "test.parquet")
    return directory


def _tick(directory: Path, cursor: str | None = None):
    context = dg.build_sensor_context(
        cursor=cursor, resources={"pool_dropbox": PoolDropbox(directory=str(directory))})
    return new_pool_files(context), context.cursor


def _drop(source: Path, directory: Path, name: str, mtime: float | None = None) -> Path:
    """Land a file the recommended way: write under a hidden name, then rename into place."""
    hidden = directory / f".{name}"
    shutil.copy(source, hidden)
    if mtime is not None:
        os.utime(hidden, (mtime, mtime))
    return hidden.rename(directory / name)


def test_sensor_starts_one_refresh_per_new_pool_file(dropbox, digits_splits):
    result, cursor = _tick(dropbox)
    assert isinstance(result, dg.SkipReason) and "no new pool*.parquet" in result.skip_message

    (dropbox / ".pool-partial.parquet").write_bytes(b"still being written")
    (dropbox / "pool-x.parquet.tmp").write_bytes(b"still being written")
    first = _drop(digits_splits.pool, dropbox, "pool-2024-06.parquet", mtime=1_700_000_000)
    result, cursor = _tick(dropbox, cursor)
    (request,) = result
    splits_config = request.run_config["ops"]["splits"]["config"]
    assert splits_config == {"pool_path": str(first.resolve()),
                             "target_path": str((dropbox / "target.parquet").resolve()),
                             "test_path": str((dropbox / "test.parquet").resolve())}
    assert request.run_key.startswith("pool-2024-06.parquet:")
    dg.validate_run_config(defs.resolve_job_def("refresh_job"), request.run_config)

    result, cursor = _tick(dropbox, cursor)
    assert isinstance(result, dg.SkipReason)  # nothing new since the last tick

    second = _drop(digits_splits.pool, dropbox, "pool-2024-07.parquet", mtime=1_700_000_100)
    result, cursor = _tick(dropbox, cursor)
    assert [r.run_config["ops"]["splits"]["config"]["pool_path"] for r in result] == \
        [str(second.resolve())]

    # A pool replaced under the same name is new data too.
    _drop(digits_splits.target, dropbox, "pool-2024-07.parquet", mtime=1_700_000_200)
    result, _ = _tick(dropbox, cursor)
    assert len(result) == 1 and result[0].run_key != request.run_key


def test_sensor_waits_for_the_target_and_test_files(dropbox, digits_splits):
    (dropbox / "test.parquet").unlink()
    _drop(digits_splits.pool, dropbox, "pool.parquet")
    result, cursor = _tick(dropbox)
    assert isinstance(result, dg.SkipReason) and "test.parquet" in result.skip_message
    assert cursor is None  # the pool file is still new once the test split arrives
    shutil.copy(digits_splits.test, dropbox / "test.parquet")
    result, _ = _tick(dropbox, cursor)
    assert len(result) == 1


def test_sensor_skips_a_missing_directory(tmp_path):
    result, _ = _tick(tmp_path / "nowhere")
    assert isinstance(result, dg.SkipReason) and "does not exist" in result.skip_message


def test_nightly_schedule_refreshes_the_newest_pool_or_the_demo(dropbox, digits_splits):
    def evaluate():
        context = dg.build_schedule_context(
            scheduled_execution_time=None,
            resources={"pool_dropbox": PoolDropbox(directory=str(dropbox))})
        return nightly_refresh(context)

    demo = evaluate()
    assert demo.run_config == {} and demo.tags["curation/pool_file"] == "demo"
    _drop(digits_splits.pool, dropbox, "pool-a.parquet", mtime=time.time() - 60)
    newest = _drop(digits_splits.pool, dropbox, "pool-b.parquet", mtime=time.time())
    request = evaluate()
    assert request.run_config["ops"]["splits"]["config"]["pool_path"] == str(newest.resolve())
    assert nightly_refresh.cron_schedule == "0 3 * * *"
