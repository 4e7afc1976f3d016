"""deduped_pool materialized in a Dagster instance: the kept pool, groups, UI metadata."""

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from assets.dedup import deduped_pool
from curation.pool import features_table
from resources import ArtifactStore


def test_materialized_kept_pool_groups_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((60, 8)).astype(np.float32)
    vectors = np.vstack([base, base[:4] + 0.01, base[:2] - 0.01])
    ids = [f"p{i:03d}" for i in range(60)] + [f"p{i:03d}-a" for i in range(4)] \
        + [f"p{i:03d}-b" for i in range(2)]
    pool_path, inputs_path = tmp_path / "pool.parquet", tmp_path / "pool.npy"
    pq.write_table(features_table(ids, vectors, labels=[1] * len(ids)), pool_path)
    np.save(inputs_path, vectors)

    @dg.asset(name="raw_pool")
    def raw_pool() -> str:
        return str(pool_path)

    @dg.asset(name="model_inputs")
    def model_inputs() -> dict:
        return {"pool": str(inputs_path)}

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize(
            [raw_pool, model_inputs, deduped_pool], instance=instance,
            resources={"artifacts": ArtifactStore(root=str(tmp_path / "artifacts"))},
            run_config={"ops": {"deduped_pool": {"config": {"threshold": 0.99}}}})
    assert result.success
    out = result.output_for_node("deduped_pool")
    assert pq.read_table(out["pool"]).num_rows == 60
    groups = pq.read_table(out["groups"]).to_pylist()
    assert groups[0] == {"group": 0, "kept_id": "p000", "removed_ids": ["p000-a", "p000-b"]}
    (event,) = result.asset_materializations_for_node("deduped_pool")
    meta = event.metadata
    assert (meta["rows"].value, meta["kept"].value, meta["removed"].value,
            meta["groups"].value) == (66, 60, 6, 4)
    assert "p000-a, p000-b" in meta["example_groups"].value
