"""The demo job on real text (20 Newsgroups + MiniLM embeddings), at a small size."""

import dagster as dg
import pytest

from curation.report import metric_table
from pipelines.demo import run
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.slow


def test_demo_job_on_targeted_text(home):
    with dg.instance_for_test(temp_dir=str(home / "dagster_home")) as instance:
        config = tiny_run_config("targeted-text")
        config["ops"].pop("benchmark_report")  # not part of demo_job
        records = run(config, instance=instance)
        runs = instance.get_runs()
    assert len(runs) == 1 and runs[0].job_name == "demo_job"
    methods = {r["method"] for r in records}
    assert methods == {"random", "less", "el2n", "gtp", "full"}
    full = next(r for r in records if r["method"] == "full")
    # 200 real documents of 20 groups, scored on sci.* test documents: far above chance (0.05).
    assert full["n_selected"] == 200 and full["test_accuracy"] > 0.3
    table = metric_table(records)
    assert table.splitlines()[0].split("|")[1].strip() == "method" and "gtp" in table
