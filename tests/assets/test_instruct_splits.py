"""The splits asset on the instruct scenario: LM splits in the contract, the data card."""

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.data import splits
from resources import ArtifactStore, CatalogResource

pytestmark = pytest.mark.slow


def test_the_splits_asset_builds_the_instruct_scenario_with_its_data_card(home):
    resources = {"artifacts": ArtifactStore(root=str(home / "artifacts")),
                 "catalog": CatalogResource(path=str(home / "catalog.duckdb"))}
    config = {"scenario": "instruct", "target_task": "bbh", "pool_size": 40, "target_size": 5,
              "test_size": 12, "per_task": 2}
    with dg.instance_for_test(temp_dir=str(home / "dagster_home")) as instance:
        result = dg.materialize([splits], resources=resources, instance=instance,
                                run_config={"ops": {"splits": {"config": config}}})
    assert result.success
    events = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
              for e in result.get_asset_materialization_events()}
    card = events["raw_pool"]["data_card"].value
    assert card["target_task"] == "bbh" and card["sizes"]["pool"] == 40
    assert any(d["source"] == "evals/tracking-shuffled-objects" for d in card["decontamination"]["dropped"])
    test = pq.read_table(result.output_for_node("splits", "test_set"))
    assert {"prompt", "response", "source", "domain"} <= set(test.column_names)
    assert test.num_rows == 12
