"""``curation select --param KEY=VALUE``: every selector option from the command line, checked
as ``catalog register-config --param`` checks it."""

import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.errors import CurationError


def _select(home, splits, *args):
    out = home / "out" / "selection.parquet"
    runner = CliRunner(env={"CURATION_HOME": str(home / "curation_home"), "COLUMNS": "200"})
    result = runner.invoke(app, ["select", "--pool", str(splits.pool), "--target",
                                 str(splits.target), "--method", "gtp", "--budget", "20",
                                 "--dim", "32", "--checkpoints", "2", "--out", str(out), *args])
    return result, out


def test_gtp_options_reach_the_selector(home, digits_splits, monkeypatch):
    # The selection itself is covered in tests/core/test_gtp.py; here: what select builds.
    import curation.workflow

    built = {}

    def capture(pool, target, selector, budget, work, settings, progress):
        built["config"] = selector.config()
        raise CurationError("stopped after building the selector")

    monkeypatch.setattr(curation.workflow, "run_selection", capture)
    result, out = _select(home, digits_splits, "--param", "refresh=4", "--param", "shards=2",
                          "--param", "feature_kind=sgd", "--param", "scheduler=tcp://x:1")
    assert result.exit_code == 2 and "stopped after building" in result.output, result.output
    config = built["config"]
    assert config["refresh"] == 4 and config["shards"] == 2 and config["feature_kind"] == "sgd"
    assert "scheduler" not in config  # execution-only: not part of the selection's identity
    assert not out.exists()


@pytest.mark.parametrize("param, message", [
    ("refresh=0", "gtp 'refresh': Input should be greater than or equal to 1"),
    ("shards=2.5", "gtp 'shards'"),
    ("feature_kind=momentum", "gtp 'feature_kind'"),
    ("bogus=1", "selector 'gtp' has no option(s) ['bogus']"),
    ("refresh", "--param must be key=value, got 'refresh'"),
])
def test_a_bad_param_is_one_line_naming_selector_and_field(home, digits_splits, param, message):
    result, out = _select(home, digits_splits, "--param", param)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()


def test_register_config_reads_params_the_same_way(home):
    runner = CliRunner(env={"COLUMNS": "200"})
    db = str(home / "catalog.duckdb")
    ok = runner.invoke(app, ["catalog", "register-config", "gtp", "--budget", "0.1", "--param",
                             "refresh=4", "--db", db])
    assert ok.exit_code == 0 and '"refresh": 4' in ok.output, ok.output
    bad = runner.invoke(app, ["catalog", "register-config", "gtp", "--budget", "0.1", "--param",
                              "refresh=0", "--db", db])
    assert bad.exit_code == 2 and "gtp 'refresh'" in bad.output
