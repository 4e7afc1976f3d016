import json

import pytest

from curation.benchmark import BenchmarkConfig, run_benchmark, write_report
from curation.datastore import DatastoreSpec
from curation.errors import CurationError
from curation.pool import load_pool
from curation.workflow import GradientSettings


@pytest.fixture(scope="module")
def splits(digits_splits):
    return (load_pool(digits_splits.pool), load_pool(digits_splits.test),
            load_pool(digits_splits.target))


def test_grid_runs_and_report_has_the_schema(splits, tmp_path):
    pool, test, target = splits
    config = BenchmarkConfig(methods=("random", "less", "gtp"), budgets=(0.05, 40), seeds=(0, 1),
                             settings=GradientSettings(datastore=DatastoreSpec(dim=32)))
    records = run_benchmark(pool, test, target, config, tmp_path / "work", progress=False)
    assert len(records) == 2 * (1 + 3 * 2)
    for record in records:
        assert {"method", "budget", "seed", "n_selected", "test_accuracy"} <= set(record)
        assert 0.0 <= record["test_accuracy"] <= 1.0
    assert {(r["method"], r["n_selected"]) for r in records if r["budget"] == 40} == {
        ("random", 40), ("less", 40), ("gtp", 40)}
    assert [r["n_selected"] for r in records if r["method"] == "full"] == [400, 400]
    random_runs = [r for r in records if r["method"] == "random" and r["budget"] == 40]
    assert random_runs[0]["config_hash"] != random_runs[1]["config_hash"]  # seed per run
    report = write_report(records, tmp_path / "out", title="digits")
    assert json.loads(report["results"].read_text()) == records
    assert "| method" in report["summary"].read_text()
    assert report["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("config, message", [
    (BenchmarkConfig(methods=("random", "magic")), "valid methods are .*'gtp'.*'random'"),
    (BenchmarkConfig(budgets=(0.1, 0)), "budget must be > 0"),
    (BenchmarkConfig(budgets=(5000,)), "larger than the pool"),
    (BenchmarkConfig(seeds=()), "at least one seed"),
])
def test_bad_grid_is_refused_before_work(splits, tmp_path, config, message):
    pool, test, target = splits
    with pytest.raises(CurationError, match=message):
        run_benchmark(pool, test, target, config, tmp_path)
    assert not (tmp_path / "embeddings").exists()


def test_target_methods_need_a_target(splits, tmp_path):
    pool, test, _ = splits
    with pytest.raises(CurationError, match=r"\['less'\] need a target"):
        run_benchmark(pool, test, None, BenchmarkConfig(methods=("random", "less")), tmp_path)


def test_checkpoint_after_every_seed_and_resume(splits, tmp_path):
    pool, test, target = splits
    settings = GradientSettings(datastore=DatastoreSpec(dim=32))
    config = BenchmarkConfig(methods=("random",), budgets=(40,), seeds=(0,), settings=settings)
    checkpoint = tmp_path / "out" / "results.partial.json"
    first = run_benchmark(pool, test, target, config, tmp_path / "work", progress=False,
                          checkpoint=checkpoint)
    saved = json.loads(checkpoint.read_text())
    assert saved["records"] == json.loads(json.dumps(first))
    # a marked record proves that resuming takes seed 0 from the checkpoint, not a rerun
    saved["records"][0]["test_accuracy"] = -1.0
    checkpoint.write_text(json.dumps(saved))
    more = BenchmarkConfig(methods=("random",), budgets=(40,), seeds=(0, 1), settings=settings)
    records = run_benchmark(pool, test, target, more, tmp_path / "work", progress=False,
                            checkpoint=checkpoint, resume=True)
    assert records[0]["test_accuracy"] == -1.0 and {r["seed"] for r in records} == {0, 1}
    assert json.loads(checkpoint.read_text())["records"] == json.loads(json.dumps(records))
    other = BenchmarkConfig(methods=("random",), budgets=(20,), seeds=(0, 1), settings=settings)
    with pytest.raises(CurationError, match="another grid or other data"):
        run_benchmark(pool, test, target, other, tmp_path / "work", progress=False,
                      checkpoint=checkpoint, resume=True)
