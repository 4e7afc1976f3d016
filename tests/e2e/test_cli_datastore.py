"""``curation datastore build | info | verify``: one real subprocess, the rest in-process."""

import json

import pytest
from typer.testing import CliRunner

from curation.cli import app
from tests.e2e.test_cli import run


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_datastore_help():
    for command in (["datastore"], ["datastore", "build"], ["datastore", "info"],
                    ["datastore", "verify"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Usage" in result.stdout, result.output
    text = " ".join(invoke("datastore", "build", "--help").stdout.replace("│", " ").split())
    assert "'all' (default" in text and "[sgd|adam]" in text and "[default: 1024]" in text


@pytest.mark.slow
def test_build_info_verify_and_resume(home, digits_splits):
    out = home / "store"
    args = ["datastore", "build", "--pool", digits_splits.pool, "--target", digits_splits.target,
            "--out", out, "--dim", "64", "--shard-size", "128", "--proxy", "mlp",
            "--checkpoints", "2"]
    built = run(*args, env_home=home)
    assert built.returncode == 0, built.stderr
    assert "400 x 2 x 64 float16 (sgd), 4 shards computed, 0 reused" in built.stdout
    assert "30 x 2 x 64" in built.stdout and "gradient shards" in built.stderr  # progress bar
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shape"] == [400, 2, 64]
    assert json.loads((out / "target" / "manifest.json").read_text())["feature_kind"] == "sgd"

    (out / "shard-00002.npy").unlink()
    resumed = invoke(*args)
    assert resumed.exit_code == 0, resumed.output
    assert "1 shards computed, 3 reused" in resumed.stdout
    assert json.loads((out / "manifest.json").read_text()) == manifest

    info = invoke("datastore", "info", out)
    assert info.exit_code == 0, info.output
    assert manifest["datastore_id"] in info.stdout and "400 examples x 2 checkpoints" in info.stdout
    assert "target datastore" in info.stdout
    assert invoke("datastore", "verify", out).exit_code == 0

    shard = out / "shard-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    bad = invoke("datastore", "verify", out)
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "shard-00001.npy" in lines[0]


@pytest.mark.parametrize("extra, message", [
    (["--kind", "foo"], "datastore 'kind': Input should be 'sgd' or 'adam'"),
    (["--dtype", "int8"], "datastore 'dtype': Input should be 'float16' or 'float32'"),
    (["--projection", "sparse"], "datastore 'projection': Input should be 'srht' or 'gaussian'"),
    (["--checkpoints", "0"], "warm-up 'checkpoints'"),
    (["--scheduler", "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler"),
])
def test_bad_datastore_input_is_one_clear_line(home, digits_splits, extra, message):
    out = home / "store"
    result = invoke("datastore", "build", "--pool", digits_splits.pool, "--out", out, *extra)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()


def test_missing_store_is_one_clear_line(home):
    for command in ("info", "verify"):
        result = invoke("datastore", command, home / "nothing")
        assert result.exit_code == 2 and "datastore manifest not found" in result.stderr
