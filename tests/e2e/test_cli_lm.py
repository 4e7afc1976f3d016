"""``curation benchmark --proxy causal-lm`` and ``curation select --proxy causal-lm`` as a user
runs them, on a small slice of the real 20 Newsgroups scenario."""

import json
import math

import pyarrow.parquet as pq
import pytest

from tests.e2e.test_cli import run

pytestmark = pytest.mark.slow


def test_causal_lm_benchmark_scores_subsets_by_held_out_perplexity(home):
    out = home / "lm-bench"
    result = run("benchmark", "--scenario", "targeted-text", "--proxy", "causal-lm",
                 "--pool-size", "60", "--test-size", "20", "--budgets", "0.1", "--seeds", "1",
                 "--dim", "64", "--pretrain-docs", "100", "--out", out, env_home=home)
    assert result.returncode == 0, result.stderr
    records = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in records} == {"base", "full", "warmup", "random", "less", "gtp"}
    for record in records:
        assert record["test_perplexity"] > 1 and "test_accuracy" not in record
        assert abs(record["test_loss"] - math.log(record["test_perplexity"])) < 1e-6
    subsets = [r for r in records if r["method"] not in ("base", "full", "warmup")]
    assert {r["n_selected"] for r in subsets} == {6}
    # The scenario's target is the sci domain: every subset counts its sci documents.
    assert all(0 <= r["n_target_domain"] <= 6 for r in subsets)
    warmup = next(r for r in records if r["method"] == "warmup")
    assert warmup["budget"] == 0 and warmup["n_selected"] == 0
    summary = (out / "summary.md").read_text()
    assert "Test perplexity (lower is better)" in summary and "gtp" in summary
    assert (out / "plot.png").stat().st_size > 1000
    bases = list((home / "curation_home" / "work" / "lm-bases").iterdir())
    assert len(bases) == 1 and (bases[0] / "tokenizer.json").exists()


def test_causal_lm_select_writes_a_selection_with_lora_lineage(home):
    data = home / "data"
    made = run("demo-data", "--scenario", "targeted-text", "--pool-size", "50",
               "--target-size", "8", "--out", data, env_home=home)
    assert made.returncode == 0, made.stderr
    out = home / "gtp.parquet"
    selected = run("select", "--pool", data / "pool.parquet", "--target",
                   data / "target.parquet", "--method", "gtp", "--budget", "5", "--proxy",
                   "causal-lm", "--checkpoints", "2", "--dim", "64", "--out", out, env_home=home)
    assert selected.returncode == 0, selected.stderr
    assert pq.read_table(out).num_rows == 5
    lineage = json.loads(out.with_suffix(".lineage.json").read_text())
    assert len(lineage["proxy_checkpoints"]) == 2 and lineage["datastores"]
    scored = run("evaluate", "--pool", data / "pool.parquet", "--selection", out, "--test",
                 data / "test.parquet", "--proxy", "causal-lm", "--checkpoints", "2",
                 "--seeds", "0,1", "--out", home / "eval.json", env_home=home)
    assert scored.returncode == 0, scored.stderr
    assert "test perplexity" in scored.stdout
    record = json.loads((home / "eval.json").read_text())
    assert record["n_train"] == 5 and len(record["test_perplexities"]) == 2
    # The proxy that select warmed up is reused, not trained again.
    proxies = list((home / "curation_home" / "work" / "proxies").iterdir())
    assert [str(p) for p in proxies] == [record["proxy"]]


def test_causal_lm_refuses_classifier_only_methods(home):
    result = run("benchmark", "--scenario", "targeted-text", "--proxy", "causal-lm",
                 "--methods", "random,el2n", "--pool-size", "60", "--out", home / "b",
                 env_home=home)
    assert result.returncode == 2
    assert "['el2n'] need class predictions" in result.stderr
    assert not (home / "b").exists()
    wrong = run("select", "--pool", home / "p.parquet", "--method", "random", "--budget", "3",
                "--lm-base", home, "--out", home / "s.parquet", env_home=home)
    assert wrong.returncode == 2 and "--lm-base needs --proxy causal-lm" in wrong.stderr
