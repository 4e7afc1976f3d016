"""gradient_datastore called directly with hand-built inputs: metadata and config pass-through."""

import dagster as dg
import numpy as np
import pytest
from pydantic import ValidationError

from assets.gradients import DatastoreConfig, gradient_datastore
from curation.errors import CurationError
from curation.pool import load_pool
from curation.proxies.classifier import ProxySpec, WarmupConfig, warmup
from resources import ArtifactStore, CatalogResource


@pytest.fixture
def upstream(tmp_path, digits_splits):
    pool = load_pool(digits_splits.pool)
    inputs = pool.features
    np.save(tmp_path / "pool.npy", inputs)
    proxy = warmup(inputs, pool.labels, 10, tmp_path / "proxy", ProxySpec("mlp", 16),
                   WarmupConfig(fraction=0.2, epochs=2, checkpoints=2))
    return {"raw_pool": str(digits_splits.pool), "model_inputs": {"pool": str(tmp_path / "pool.npy")},
            "warmup_proxy": str(proxy.checkpoints[0].model_path.parent)}


def _run(tmp_path, upstream, **config):
    return gradient_datastore(
        context=dg.build_asset_context(), config=DatastoreConfig(dim=32, shard_size=128, **config),
        artifacts=ArtifactStore(root=str(tmp_path / "artifacts")),
        catalog=CatalogResource(path=str(tmp_path / "catalog.duckdb")), **upstream)


def test_metadata_describes_the_store_and_its_build(tmp_path, upstream):
    first = _run(tmp_path, upstream, kinds=["sgd"], params="last")
    meta = first.metadata
    assert (meta["n"].value, meta["dim"].value, meta["checkpoints"].value) == (400, 32, 2)
    assert meta["projection"].value.startswith("srht (seed 0): gradients of 170 parameters "
                                               "(2.weight, 2.bias) -> 32 dims")
    assert meta["scheduler"].value == "in-process" and meta["reused_existing_store"].value is False
    rate = meta["examples_per_second"].value
    assert rate > 0 and meta["bytes_on_disk"].value > 400 * 2 * 32 * 2
    # Re-materializing reuses the store: the rate shown is the one of the build that made it.
    again = _run(tmp_path, upstream, kinds=["sgd"], params="last").metadata
    assert again["reused_existing_store"].value is True
    assert again["examples_per_second"].value == rate


def test_scheduler_is_passed_through_to_the_build(tmp_path, upstream):
    with pytest.raises(CurationError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'"):
        _run(tmp_path, upstream, kinds=["sgd"], scheduler="tcp://127.0.0.1:1")


def test_bad_params_fail_at_config_time(tmp_path, upstream):
    with pytest.raises(ValidationError, match="params"):
        DatastoreConfig(params=" , ")
    # Names are checked against the proxy's parameters when it is loaded, naming both.
    with pytest.raises(CurationError, match=r"unknown parameter names \['head'\]"):
        _run(tmp_path, upstream, kinds=["sgd"], params="head")
