"""Run the demo job on the persistent Dagster instance and print the accuracy table.

``python -m pipelines.demo`` (what ``make demo`` runs). The run is recorded in
``$DAGSTER_HOME``, so it shows in the UI (``make ui``) afterwards.
"""

import sys
import time

import dagster as dg

from curation.report import metric_table
from pipelines.definitions import defs


def run(run_config: dict | None = None, instance: dg.DagsterInstance | None = None) -> list[dict]:
    """Execute ``demo_job`` and return the evaluation records."""
    job = defs.resolve_job_def("demo_job")
    instance = instance or dg.DagsterInstance.get()
    # Step-level INFO logs show progress; DEBUG event lines would bury the table.
    config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}, **(run_config or {})}
    result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
    if not result.success:
        failure = next((e for e in result.all_events if e.is_failure), None)
        message = failure.message if failure else "unknown failure"
        raise SystemExit(f"demo_job failed: {message}")
    return result.output_for_node("subset_evaluation")


def main() -> None:
    started = time.perf_counter()
    records = run()
    print("\nTarget test accuracy (targeted 20 Newsgroups, sci.* test documents):\n")
    print(metric_table(records))
    print(f"\nwall time {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
