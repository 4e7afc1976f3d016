"""Keeping the graph fresh: a refresh job, its nightly schedule, and a sensor that
starts it when a new pool file lands in the watched directory (``PoolDropbox``)."""

import json
from pathlib import Path

import dagster as dg

from assets.data import splits
from curation.watch import landed_files, resolve_beside
from pipelines.per_config import PER_CONFIG_GROUPS
from resources import PoolDropbox

# The benchmark grid (benchmark_report) is an on-demand study, not part of a refresh; the
# per-config assets follow through their own sensor (new configs) and jobs.
refresh_job = dg.define_asset_job(
    "refresh_job",
    selection=dg.AssetSelection.assets(splits).downstream()
    - dg.AssetSelection.assets("benchmark_report") - dg.AssetSelection.groups(*PER_CONFIG_GROUPS),
    description="Re-materialize the pool and everything that depends on it (not the benchmark).")


def pool_run_config(pool: Path, dropbox: PoolDropbox) -> dict:
    """Run config that points ``splits`` at ``pool`` and the dropbox's target and test files."""
    return {"ops": {"splits": {"config": {
        "pool_path": str(pool),
        "target_path": str(resolve_beside(dropbox.directory, dropbox.target).resolve()),
        "test_path": str(resolve_beside(dropbox.directory, dropbox.test).resolve())}}}}


def _missing_companions(dropbox: PoolDropbox) -> list[str]:
    return [str(p) for p in (resolve_beside(dropbox.directory, dropbox.target),
                             resolve_beside(dropbox.directory, dropbox.test)) if not p.is_file()]


@dg.sensor(job=refresh_job, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts refresh_job for every new or replaced pool file in the dropbox.")
def new_pool_files(context: dg.SensorEvaluationContext, pool_dropbox: PoolDropbox):
    directory = Path(pool_dropbox.directory)
    if not directory.is_dir():
        return dg.SkipReason(f"watched directory {directory} does not exist")
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    new = [f for f in landed_files(directory, pool_dropbox.pattern) if f.key not in seen]
    if not new:
        return dg.SkipReason(f"no new {pool_dropbox.pattern} in {directory}")
    missing = _missing_companions(pool_dropbox)
    if missing:
        return dg.SkipReason(f"{len(new)} new pool file(s) wait for {', '.join(missing)}")
    context.update_cursor(json.dumps(sorted(seen | {f.key for f in new})))
    return [dg.RunRequest(run_key=f.key, run_config=pool_run_config(f.path, pool_dropbox),
                          tags={"curation/pool_file": str(f.path)}) for f in new]


@dg.schedule(job=refresh_job, cron_schedule="0 3 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Nightly refresh on the newest pool file in the dropbox, or on the "
                         "demo scenario when the dropbox is empty.")
def nightly_refresh(context: dg.ScheduleEvaluationContext, pool_dropbox: PoolDropbox):
    directory = Path(pool_dropbox.directory)
    pools = landed_files(directory, pool_dropbox.pattern) if directory.is_dir() else []
    if not pools:
        return dg.RunRequest(run_config={}, tags={"curation/pool_file": "demo"})
    missing = _missing_companions(pool_dropbox)
    if missing:
        return dg.SkipReason(f"newest pool {pools[-1].path.name} waits for {', '.join(missing)}")
    return dg.RunRequest(run_config=pool_run_config(pools[-1].path, pool_dropbox),
                         tags={"curation/pool_file": str(pools[-1].path)})
