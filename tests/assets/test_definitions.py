import dagster as dg
import pytest

from pipelines.definitions import defs


def test_definitions_load_with_the_whole_graph():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"raw_pool", "target_set", "test_set", "model_inputs", "deduped_pool",
                    "warmup_proxy",
                    "gradient_datastore", "target_gradients", "scored_subsets",
                    "subset_evaluation", "benchmark_report", "scored_subset", "dataset_release",
                    "distilled_set"}
    job = defs.resolve_job_def("demo_job")
    assert isinstance(job, dg.JobDefinition)
    assert isinstance(defs.resources["io_manager"], dg.FilesystemIOManager)


@pytest.mark.parametrize("op, config, field", [
    ("warmup_proxy", {"fraction": "lots"}, "fraction"),
    ("warmup_proxy", {"kind": "cnn"}, "kind"),
    ("gradient_datastore", {"dtype": "int8"}, "dtype"),
])
def test_bad_config_fails_before_work_with_the_field_name(op, config, field):
    with pytest.raises(dg.DagsterInvalidConfigError, match=f"{op}:config:{field}"):
        dg.validate_run_config(defs.resolve_job_def("demo_job"),
                               {"ops": {op: {"config": config}}})


def test_list_choices_are_validated_by_name():
    from pydantic import ValidationError

    from assets.gradients import DatastoreConfig
    from assets.selection import SelectionConfig

    with pytest.raises(ValidationError, match="methods"):
        SelectionConfig(methods=["random", "magic"])
    with pytest.raises(ValidationError, match="kinds"):
        DatastoreConfig(kinds=[])
    assert SelectionConfig().methods == ["random", "less", "el2n", "gtp"]


def _selected(job: str) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys}


def test_unpartitioned_jobs_need_no_partition_key():
    """demo_job and refresh_job leave the per-config (partitioned) assets to their own jobs."""
    graph = defs.resolve_asset_graph()
    unpartitioned = {k.to_user_string() for k in graph.materializable_asset_keys
                     if graph.get(k).partitions_def is None}
    assert _selected("refresh_job") == unpartitioned - {"benchmark_report"}
    assert _selected("demo_job") == unpartitioned - {"benchmark_report"}
    for key in graph.materializable_asset_keys:
        if key.to_user_string() not in unpartitioned:
            assert graph.get(key).partitions_def.name == "selector_config"
    # What `make materialize` selects by string is the same set.
    assert unpartitioned == {k.to_user_string() for k in dg.AssetSelection.from_string(
        "not (group:subsets or group:releases)").resolve(graph)}


def test_checks_schedules_and_sensors():
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {("raw_pool", "ids_unique"), ("gradient_datastore", "finite_gradients"),
                      ("gradient_datastore", "shape_matches_pool"),
                      ("target_gradients", "finite_gradients"),
                      ("scored_subsets", "ids_unique"), ("scored_subsets", "budget_respected"),
                      ("scored_subsets", "lineage_complete"),
                      ("scored_subset", "ids_unique"), ("scored_subset", "budget_respected"),
                      ("scored_subset", "lineage_complete")}
    per_config = [c for c in defs.asset_checks
                  if any(s.asset_key.to_user_string() == "scored_subset" for s in c.check_specs)]
    assert per_config and all(spec.blocking for c in per_config for spec in c.check_specs)
    assert {s.name for s in defs.schedules} == {"nightly_refresh"}
    assert {s.name for s in defs.sensors} == {"new_pool_files", "new_selector_configs"}
    assert _selected("subset_job") == {"scored_subset"}
    assert _selected("release_job") == {"scored_subset", "dataset_release"}
