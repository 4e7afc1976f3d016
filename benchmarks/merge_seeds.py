"""Merge `curation benchmark` runs of one scenario (e.g. one per seed, or one per method group)
into one results.json, summary.md and plot.png.

    python benchmarks/merge_seeds.py OUT_DIR RUN_DIR [RUN_DIR ...]

Records are keyed by (method, budget, seed); the first run that has a key wins, and a later
record with the same key must carry the same metric (the ``full`` reference every run
repeats), or the merge fails. OUT_DIR may be one of the runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.benchmark import write_report  # noqa: E402


def merge(runs: list[Path]) -> list[dict]:
    records: dict[tuple, dict] = {}
    for run in runs:
        for record in json.loads((run / "results.json").read_text()):
            key = (record["method"], record["budget"], record["seed"])
            if key not in records:
                records[key] = record
            elif (record["method"] == "full"
                  and abs(record["test_accuracy"] - records[key]["test_accuracy"]) > 1e-9):
                raise SystemExit(f"{run}: {key} differs from an earlier run's "
                                 f"({record['test_accuracy']} vs {records[key]['test_accuracy']})")
    return list(records.values())  # first-seen order: the tables list methods in that order


if __name__ == "__main__":
    out, *runs = (Path(a) for a in sys.argv[1:])
    records = merge(runs)
    report = write_report(records, out, title=out.name)
    print(report["table"])
