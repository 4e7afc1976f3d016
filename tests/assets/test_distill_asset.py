"""distilled_set[config]: a partition's subset distilled, on the shared tiny materialization."""

import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from assets.distill import DistilledSetConfig, distilled_set
from assets.subset import SELECTOR_CONFIGS, scored_subset
from curation.catalog import Catalog
from tests.assets.conftest import UPSTREAM

ASSETS = [*(dg.AssetSpec(k) for k in [*UPSTREAM, "test_set"]), scored_subset, distilled_set]


def _distill(materialized, key: str, config: dict) -> dg.ExecuteInProcessResult:
    materialized.instance.add_dynamic_partitions(SELECTOR_CONFIGS.name, [key])
    return dg.materialize(ASSETS, partition_key=key, instance=materialized.instance,
                          resources=materialized.resources(), raise_on_error=False,
                          run_config={"ops": {"distilled_set": {"config": config}}})


def _random_half(materialized) -> str:
    # Half of the 300-digit pool: every digit is in the subset several times.
    return Catalog(materialized.catalog_path).register_config(
        {"selector": "random", "seed": 7, "budget": 0.5})


def test_distilled_set_distills_its_partitions_subset(materialized):
    key = _random_half(materialized)
    result = _distill(materialized, key, {"per_class": 2, "expert_epochs": 4, "expert_lr": 1e-2,
                                          "eval_seeds": [0, 1]})
    assert result.success
    subset = result.output_for_node("scored_subset")
    paths = result.output_for_node("distilled_set")
    table = pq.read_table(paths["distilled"])
    assert table.num_rows == 20 and table.column("soft_label").type.list_size == 10
    ranked = pq.read_table(subset["path"]).column("id").to_pylist()
    assert set(table.column("source_id").to_pylist()) <= set(ranked)
    lineage = json.loads(Path(paths["lineage"]).read_text())
    assert lineage["selection"]["path"] == subset["path"]
    evaluation = json.loads(Path(paths["evaluation"]).read_text())
    assert evaluation["seeds"] == [0, 1] and evaluation["test_accuracy_mean"] > 0.3
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "distilled_set"]
    materialization = event.step_materialization_data.materialization
    assert materialization.partition == key
    metadata = materialization.metadata
    assert metadata["test_accuracy_mean"].value == pytest.approx(evaluation["test_accuracy_mean"])
    assert metadata["teacher_test_accuracy"].value > 0.5
    assert metadata["grid"].value.startswith("![plot](data:image/png;base64,")
    assert "label_bytes" in metadata["storage"].value


def test_a_subset_too_small_for_per_class_fails_naming_the_class(materialized):
    key = _random_half(materialized)
    result = _distill(materialized, key, {"per_class": 40})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "fewer than per_class=40; use a larger selection" in str(
        failure.step_failure_data.error)


@pytest.mark.parametrize("field, value", [("per_class", 0), ("method", "magic"),
                                          ("labels", "fuzzy"), ("eval_seeds", [])])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        DistilledSetConfig(**{field: value})


def test_the_config_derives_from_the_core_config():
    from curation.distill import DistillConfig, ExpertConfig, StudentSpec

    assert DistilledSetConfig().core() == DistillConfig()
    core = DistilledSetConfig(model="convnet", width=8, expert_epochs=4, expert_epoch=0,
                              labels="shuffled").core()
    assert core.model == StudentSpec("convnet", width=8) and core.labels == "shuffled"
    assert core.expert == ExpertConfig(epochs=4) and core.expert_epoch == 0
    fields = DistilledSetConfig.model_fields
    assert fields["expert_lr"].default == ExpertConfig().lr
    assert fields["labels"].description == DistillConfig.__pydantic_fields__["labels"].description
