import json

import numpy as np
import pytest

from curation.datastore import DatastoreSpec, build_datastore, open_datastore
from curation.errors import CurationError
from curation.proxy import ProxySpec, WarmupConfig, warmup


@pytest.fixture(scope="module")
def proxy_and_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    proxy = warmup(x, y, 3, tmp_path_factory.mktemp("proxy"), ProxySpec("mlp", 8),
                   WarmupConfig(fraction=0.5, epochs=3, checkpoints=3))
    return proxy, x, y, np.array([f"e{i}" for i in range(90)], dtype=object)


def _build(proxy_and_data, directory, **spec):
    proxy, x, y, ids = proxy_and_data
    return build_datastore(proxy, x, y, ids, directory,
                           DatastoreSpec(dim=16, shard_size=32, **spec), pool_id="p")


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_build_and_open_round_trip(tmp_path, proxy_and_data, kind):
    store = _build(proxy_and_data, tmp_path / "s", kind=kind)
    opened = open_datastore(tmp_path / "s")
    assert opened.manifest == store.manifest
    assert [s.shape for s in opened.shards()] == [(32, 3, 16), (32, 3, 16), (26, 3, 16)]
    assert opened.shard(0).dtype == np.float16
    assert list(opened.ids[:2]) == ["e0", "e1"]
    traj = opened.trajectories([1.0, 2.0, 0.0])
    assert traj.shape == (90, 48)
    np.testing.assert_allclose(traj[:32, 16:32], 2 * opened.shard(0)[:, 1].astype(np.float32))
    assert not traj[:, 32:].any()


def test_same_inputs_give_identical_bytes_and_resume(tmp_path, proxy_and_data):
    first = _build(proxy_and_data, tmp_path / "a")
    (tmp_path / "a" / "shard-00001.npy").unlink()  # as if the build was cut off
    resumed = _build(proxy_and_data, tmp_path / "a")
    fresh = _build(proxy_and_data, tmp_path / "b")
    assert first.manifest == resumed.manifest == fresh.manifest


def test_corrupted_or_missing_shard_is_named(tmp_path, proxy_and_data):
    _build(proxy_and_data, tmp_path / "s")
    shard = tmp_path / "s" / "shard-00002.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CurationError, match="shard-00002.npy"):
        open_datastore(tmp_path / "s")
    shard.unlink()
    with pytest.raises(CurationError, match="shard missing: .*shard-00002.npy"):
        open_datastore(tmp_path / "s")


def test_directory_of_another_build_is_refused(tmp_path, proxy_and_data):
    _build(proxy_and_data, tmp_path / "s")
    with pytest.raises(CurationError, match="different config"):
        _build(proxy_and_data, tmp_path / "s", kind="adam")


def test_manifest_records_projection_and_checkpoints(tmp_path, proxy_and_data):
    _build(proxy_and_data, tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["projection"]["seed_scheme"] == "seed * 1_000_003 + block"
    assert manifest["proxy_checkpoints"] == [c.sha256 for c in proxy_and_data[0].checkpoints]
    assert len(manifest["shards"]) == 3 and all(len(s["sha256"]) == 64 for s in manifest["shards"])
