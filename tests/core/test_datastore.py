import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from curation.datastore import (
    DatastoreSpec,
    build_datastore,
    open_datastore,
    verify_datastore,
)
from curation.datastore.dask import shard_task
from curation.errors import CurationError
from curation.gradients import adam_features, per_example_gradients
from curation.projectors import HadamardProjector
from curation.proxies.classifier import ProxySpec, WarmupConfig, parameter_names, warmup
from tests.conftest import REPO


@pytest.fixture(scope="module")
def proxy_and_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    proxy = warmup(x, y, 3, tmp_path_factory.mktemp("proxy"), ProxySpec("mlp", 8),
                   WarmupConfig(fraction=0.5, epochs=3, checkpoints=3))
    return proxy, x, y, np.array([f"e{i}" for i in range(90)], dtype=object)


def _build(proxy_and_data, directory, scheduler=None, **spec):
    proxy, x, y, ids = proxy_and_data
    return build_datastore(proxy, x, y, ids, directory,
                           DatastoreSpec(dim=16, shard_size=32, **spec), pool_id="p",
                           scheduler=scheduler)


def _files(directory: Path) -> dict[str, bytes]:
    """Manifest and shard bytes: what must be identical between two builds."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())
            if p.name == "manifest.json" or p.suffix == ".npy"}


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_build_and_open_round_trip(tmp_path, proxy_and_data, kind):
    store = _build(proxy_and_data, tmp_path / "s", kind=kind)
    opened = open_datastore(tmp_path / "s")
    assert opened.manifest == store.manifest
    assert [s.shape for s in opened.shards()] == [(32, 3, 16), (32, 3, 16), (26, 3, 16)]
    assert opened.shard(0).dtype == np.float16
    # Shards are streamed batch by batch, yet are exactly what np.save writes.
    saved = io.BytesIO()
    np.save(saved, np.asarray(opened.shard(2)))
    assert saved.getvalue() == (tmp_path / "s" / "shard-00002.npy").read_bytes()
    assert list(opened.ids[:2]) == ["e0", "e1"]
    # Atoms read each row as its flattened trajectory, one dim-wide block per checkpoint; a
    # per-column scale (as GTP weights checkpoints) scales exactly that checkpoint's block.
    rows = np.concatenate([atom.open() for atom in opened.atoms()]).astype(np.float32)
    assert rows.shape == (90, 48)
    traj = rows * np.repeat(np.float32([1.0, 2.0, 0.0]), 16)
    np.testing.assert_allclose(traj[:32, 16:32], 2 * opened.shard(0)[:, 1].astype(np.float32))
    assert not traj[:, 32:].any()
    np.testing.assert_allclose(opened.mean(), rows.reshape(90, 3, 16).mean(0), rtol=1e-6)
    assert opened.nbytes == sum((tmp_path / "s" / s["file"]).stat().st_size
                                for s in opened.manifest["shards"])


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_stored_features_equal_a_direct_computation(tmp_path, proxy_and_data, kind):
    proxy, x, y, _ = proxy_and_data
    store = _build(proxy_and_data, tmp_path / "s", kind=kind, dtype="float32")
    projector = HadamardProjector(proxy.in_dim * 8 + 8 + 8 * 3 + 3, 16, seed=0)
    for c, checkpoint in enumerate(proxy.checkpoints):
        model = proxy.load_model(checkpoint)
        names = parameter_names(model, "all")
        g = per_example_gradients(model, names, torch.from_numpy(x[40:50]),
                                  torch.from_numpy(y[40:50]))
        if kind == "adam":
            moments = proxy.load_moments(checkpoint)
            m, v = (torch.cat([moments[f"{key}.{n}"].reshape(-1) for n in names])
                    for key in ("exp_avg", "exp_avg_sq"))
            g = adam_features(g, m, v, proxy.betas, proxy.eps)
        np.testing.assert_allclose(store.shard(1)[8:18, c], projector(g).numpy(), rtol=1e-4,
                                   atol=1e-6)


def test_same_inputs_give_identical_bytes_and_resume(tmp_path, proxy_and_data):
    first = _build(proxy_and_data, tmp_path / "a")
    assert first.report.computed == (0, 1, 2) and first.report.reused == ()
    (tmp_path / "a" / "shard-00001.npy").unlink()  # as if the build was cut off
    resumed = _build(proxy_and_data, tmp_path / "a")
    assert resumed.report.computed == (1,) and resumed.report.reused == (0, 2)
    fresh = _build(proxy_and_data, tmp_path / "b")
    assert first.manifest == resumed.manifest == fresh.manifest
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    again = _build(proxy_and_data, tmp_path / "a")
    assert again.report.computed == () and again.report.examples_per_second is None
    stats = again.last_build_stats()
    assert stats["computed"] == [1] and stats["examples_per_second"] > 0


def test_partial_or_unconfirmed_shard_is_never_taken_as_complete(tmp_path, proxy_and_data):
    directory = tmp_path / "s"
    _build(proxy_and_data, directory)
    reference = _files(directory)
    # A shard truncated under its final name (e.g. copied by hand) keeps its old sidecar.
    shard0 = directory / "shard-00000.npy"
    shard0.write_bytes(shard0.read_bytes()[:200])
    # A shard renamed into place whose sidecar was never written (killed in between).
    (directory / "shard-00001.sha256").unlink()
    # A temp file left by a killed writer.
    (directory / ".shard-00002.npy.abc123.tmp").write_bytes(b"partial")
    kept = (directory / "shard-00002.npy").stat()
    resumed = _build(proxy_and_data, directory)
    assert resumed.report.computed == (0, 1) and resumed.report.reused == (2,)
    assert _files(directory) == reference
    assert not list(directory.glob(".*.tmp"))
    after = (directory / "shard-00002.npy").stat()
    assert (after.st_ino, after.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)


_KILL_SCRIPT = """
import json, sys
import numpy as np
from curation.datastore import DatastoreSpec, build_datastore
from curation.proxies.classifier import load_proxy
proxy_dir, data, out, spec = sys.argv[1:5]
data = np.load(data)
build_datastore(load_proxy(proxy_dir), data["x"], data["y"], list(data["ids"]), out,
                DatastoreSpec(**json.loads(spec)), pool_id="p")
"""


@pytest.mark.slow
def test_resume_after_sigkill_computes_only_missing_shards(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((192, 16)).astype(np.float32)
    y = (x[:, :4].argmax(axis=1)).astype(np.int64)
    ids = np.array([f"r{i}" for i in range(len(x))])
    proxy = warmup(x, y, 4, tmp_path / "proxy", ProxySpec("mlp", 32),
                   WarmupConfig(fraction=0.1, epochs=2, checkpoints=2))
    np.savez(tmp_path / "data.npz", x=x, y=y, ids=ids)
    # batch_size=1: one vmap call per example, so the 12 shards take a few seconds and the
    # kill lands part-way through.
    spec = {"dim": 64, "shard_size": 16, "batch_size": 1}
    out = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(tmp_path / "proxy"), str(tmp_path / "data.npz"),
         str(out), json.dumps(spec)], env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("shard-*.sha256"))) < 2:
        assert child.poll() is None, f"builder exited early: {child.stderr.read().decode()}"
        assert time.monotonic() < deadline, "builder made no progress"
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    finished = sorted(out.glob("shard-*.sha256"))
    assert 2 <= len(finished) < 12, "the kill should land part-way through the build"
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
            for s in finished for p in (s, s.with_suffix(".npy"))}

    resumed = build_datastore(proxy, x, y, ids, out, DatastoreSpec(**spec), pool_id="p")
    reused = tuple(int(s.stem.split("-")[1]) for s in finished)
    assert resumed.report.reused == reused
    assert resumed.report.computed == tuple(i for i in range(12) if i not in reused)
    assert {name: (out / name).stat().st_ino for name in kept} == \
        {name: ino for name, (ino, _) in kept.items()}
    assert all((out / name).stat().st_mtime_ns == mtime for name, (_, mtime) in kept.items())

    fresh = build_datastore(proxy, x, y, ids, tmp_path / "fresh", DatastoreSpec(**spec),
                            pool_id="p")
    assert fresh.manifest == resumed.manifest
    assert _files(out) == _files(tmp_path / "fresh")
    assert open_datastore(out).n == 192


@pytest.mark.slow
def test_dask_workers_write_the_same_bytes(tmp_path, proxy_and_data):
    from distributed import LocalCluster

    local = _build(proxy_and_data, tmp_path / "local")
    shutil.copytree(tmp_path / "local", tmp_path / "resumed")
    for index in (0, 2):
        (tmp_path / "resumed" / f"shard-{index:05d}.npy").unlink()
    # A separate worker process (torch single-threaded there, two tasks at once) against this
    # process (two torch threads): the bytes must not depend on where a shard ran.
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address=None) as cluster:
        remote = _build(proxy_and_data, tmp_path / "remote", scheduler=cluster.scheduler_address)
        resumed = _build(proxy_and_data, tmp_path / "resumed",
                         scheduler=cluster.scheduler_address)
    assert remote.report.computed == (0, 1, 2)
    assert remote.report.scheduler == cluster.scheduler_address
    assert resumed.report.computed == (0, 2) and resumed.report.reused == (1,)
    assert remote.manifest == resumed.manifest == local.manifest
    assert _files(tmp_path / "remote") == _files(tmp_path / "local") == \
        _files(tmp_path / "resumed")


def test_shard_tasks_in_concurrent_threads_give_the_same_bytes(tmp_path, proxy_and_data):
    # What a Dask worker with several threads does: shard tasks of one build at once.
    proxy, x, y, _ = proxy_and_data
    local = _build(proxy_and_data, tmp_path / "local")
    spec = DatastoreSpec(dim=16, shard_size=32)
    (tmp_path / "threads").mkdir()
    jobs = [(i, start) for i, start in enumerate((0, 32, 64))] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = list(pool.map(lambda job: shard_task(
            proxy, spec, x[job[1]:job[1] + 32], y[job[1]:job[1] + 32],
            str(tmp_path / "threads" / f"shard-{job[0]:05d}.npy")), jobs))
    assert digests == [s["sha256"] for s in local.manifest["shards"]] * 4


def test_bad_scheduler_address_is_a_clear_error(tmp_path, proxy_and_data):
    with pytest.raises(CurationError, match="cannot reach the Dask scheduler at 'nowhere'"):
        _build(proxy_and_data, tmp_path / "s", scheduler="nowhere")


def test_corrupted_or_missing_shard_is_named(tmp_path, proxy_and_data):
    _build(proxy_and_data, tmp_path / "s")
    shard = tmp_path / "s" / "shard-00002.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CurationError, match="shard-00002.npy"):
        open_datastore(tmp_path / "s")
    (tmp_path / "s" / "shard-00000.npy").unlink()
    problems = verify_datastore(tmp_path / "s")
    assert len(problems) == 2
    assert "missing" in problems[0] and "shard-00000.npy" in problems[0]
    assert "sha256 mismatch" in problems[1] and "shard-00002.npy" in problems[1]
    shard.unlink()
    with pytest.raises(CurationError, match=r"shard missing: .*shard-00000.npy \(and 1 more"):
        open_datastore(tmp_path / "s")


def test_directory_of_another_build_is_refused(tmp_path, proxy_and_data):
    _build(proxy_and_data, tmp_path / "s")
    with pytest.raises(CurationError, match="different config"):
        _build(proxy_and_data, tmp_path / "s", kind="adam")


def test_a_second_build_into_one_directory_waits_for_the_first(tmp_path, proxy_and_data,
                                                                monkeypatch, capsys):
    (tmp_path / "s").mkdir()
    with open(tmp_path / "s" / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        monkeypatch.setenv("CURATION_LOCK_TIMEOUT", "0.3")
        with pytest.raises(CurationError, match=r"datastore build in .* is still held by another "
                                                r"process .* after 0.3 s"):
            _build(proxy_and_data, tmp_path / "s")
        monkeypatch.delenv("CURATION_LOCK_TIMEOUT")
        threading.Timer(0.5, fcntl.flock, (handle, fcntl.LOCK_UN)).start()
        started = time.monotonic()
        assert _build(proxy_and_data, tmp_path / "s").n == 90
    assert time.monotonic() - started >= 0.4
    assert "waiting for another process" in capsys.readouterr().err


def test_unknown_parameter_names_are_refused_before_anything_is_written(tmp_path,
                                                                        proxy_and_data):
    with pytest.raises(CurationError, match="unknown parameter names"):
        _build(proxy_and_data, tmp_path / "s", params=("nosuchparam",))
    assert not (tmp_path / "s").exists()


def test_manifest_records_projection_and_checkpoints(tmp_path, proxy_and_data):
    _build(proxy_and_data, tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["projection"]["kind"] == "srht" and manifest["projection"]["seed"] == 0
    assert manifest["proxy_checkpoints"] == [c.sha256 for c in proxy_and_data[0].checkpoints]
    assert len(manifest["shards"]) == 3 and all(len(s["sha256"]) == 64 for s in manifest["shards"])
    assert manifest["param_names"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert manifest["n_params"] == 6 * 8 + 8 + 8 * 3 + 3


def test_gaussian_projection_and_parameter_choice(tmp_path, proxy_and_data):
    store = _build(proxy_and_data, tmp_path / "g", projection="gaussian", params="last")
    assert store.manifest["projection"]["seed_scheme"] == "seed * 1_000_003 + block"
    assert store.manifest["param_names"] == ["2.weight", "2.bias"]
    assert store.manifest["n_params"] == 8 * 3 + 3
    named = _build(proxy_and_data, tmp_path / "n", params=("2.weight",))
    assert named.manifest["params"] == ["2.weight"] and named.manifest["n_params"] == 24
    assert open_datastore(tmp_path / "n").manifest == named.manifest
    with pytest.raises(CurationError, match="unknown parameter names"):
        _build(proxy_and_data, tmp_path / "x", params=("nope",))
    with pytest.raises(CurationError, match="datastore 'params': must be 'all', 'last'"):
        DatastoreSpec(params="head")
    with pytest.raises(CurationError, match="datastore 'projection': Input should be 'srht' or 'gaussian'"):
        DatastoreSpec(projection="sparse")


def test_normalize_gives_unit_rows(tmp_path, proxy_and_data):
    store = _build(proxy_and_data, tmp_path / "s", normalize=True, dtype="float32")
    norms = np.linalg.norm(store.shard(0), axis=2)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_float16_overflow_is_a_clear_error(tmp_path, proxy_and_data):
    proxy, x, y, ids = proxy_and_data
    huge = x * np.float32(1e7)
    with pytest.raises(CurationError, match="shard-00000.npy: .*float16 range.*float32"):
        build_datastore(proxy, huge, y, ids, tmp_path / "s", DatastoreSpec(dim=16, shard_size=32))
    store = build_datastore(proxy, huge, y, ids, tmp_path / "f32",
                            DatastoreSpec(dim=16, shard_size=32, dtype="float32"))
    assert all(np.isfinite(shard).all() for shard in store.shards())


def test_inputs_not_matching_the_proxy_are_refused(tmp_path, proxy_and_data):
    proxy, x, y, ids = proxy_and_data
    with pytest.raises(CurationError, match=r"must be \(rows, 6\)"):
        build_datastore(proxy, x[:, :5], y, ids, tmp_path / "s")
    with pytest.raises(CurationError, match="same length"):
        build_datastore(proxy, x, y[:10], ids, tmp_path / "s")
