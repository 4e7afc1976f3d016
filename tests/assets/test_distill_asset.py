import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from assets.distill import DistilledSetConfig, _subset_path
from curation.errors import CurationError
from pipelines.definitions import ALL_ASSETS
from resources import ArtifactStore, CatalogResource
from tests.conftest import tiny_run_config

GRAPH = dg.AssetSelection.assets("distilled_set").upstream()


def _run(home: Path, distill_config: dict) -> dg.ExecuteInProcessResult:
    config = tiny_run_config("digits", methods=("random",))
    config["ops"].pop("benchmark_report")
    # Half the pool, so the random subset holds every digit several times.
    config["ops"]["scored_subsets"]["config"].update(budgets=[0.5], random_seeds=[0])
    config["ops"]["distilled_set"] = {"config": distill_config}
    resources = {"artifacts": ArtifactStore(root=str(home / "artifacts")),
                 "catalog": CatalogResource(path=str(home / "catalog.duckdb"))}
    with dg.instance_for_test(temp_dir=str(home / "dagster_home")) as instance:
        return dg.materialize(ALL_ASSETS, selection=GRAPH, resources=resources,
                              run_config=config, instance=instance, raise_on_error=False)


def test_distilled_set_materializes_from_a_scored_subset(home):
    result = _run(home, {"per_class": 2, "selection": "random", "expert_epochs": 4,
                         "expert_lr": 1e-2, "eval_seeds": [0, 1]})
    assert result.success
    paths = result.output_for_node("distilled_set")
    table = pq.read_table(paths["distilled"])
    assert table.num_rows == 20 and table.column("soft_label").type.list_size == 10
    subset = result.output_for_node("scored_subsets")[0]
    assert set(table.column("source_id").to_pylist()) <= set(
        pq.read_table(subset["path"]).column("id").to_pylist())
    lineage = json.loads(Path(paths["lineage"]).read_text())
    assert lineage["selection"]["path"] == subset["path"]
    evaluation = json.loads(Path(paths["evaluation"]).read_text())
    assert evaluation["seeds"] == [0, 1] and evaluation["test_accuracy_mean"] > 0.3
    metadata = next(e.step_materialization_data.materialization.metadata
                    for e in result.get_asset_materialization_events()
                    if e.asset_key.to_user_string() == "distilled_set")
    assert metadata["test_accuracy_mean"].value == pytest.approx(evaluation["test_accuracy_mean"])
    assert metadata["grid"].value.startswith("![plot](data:image/png;base64,")
    assert "label_bytes" in metadata["storage"].value
    assert metadata["teacher_test_accuracy"].value > 0.5


def test_subset_choice_takes_the_largest_budget_and_names_the_field_when_missing():
    subsets = [{"method": "random", "budget": b, "seed": s, "path": f"r{b}-{s}"}
               for b in (0.05, 0.1) for s in (1, 0)] + [
        {"method": "gtp", "budget": 0.05, "seed": 0, "path": "g"}]
    assert _subset_path(subsets, "random", None) == "r0.1-0"
    assert _subset_path(subsets, "random", 0.05) == "r0.05-0"
    with pytest.raises(CurationError, match=r"config 'selection': no 'gtp' subset at budget 0.1"):
        _subset_path(subsets, "gtp", 0.1)
    with pytest.raises(CurationError, match="no 'less' subset"):
        _subset_path(subsets, "less", None)


@pytest.mark.parametrize("field, value", [("per_class", 0), ("selection", "magic"),
                                          ("labels", "fuzzy"), ("eval_seeds", [])])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        DistilledSetConfig(**{field: value})
