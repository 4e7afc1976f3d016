import dagster as dg
import pytest

from pipelines.definitions import defs


def test_definitions_load_with_the_whole_graph():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"raw_pool", "target_set", "test_set", "model_inputs", "warmup_proxy",
                    "gradient_datastore", "target_gradients", "scored_subsets",
                    "subset_evaluation", "benchmark_report"}
    job = defs.resolve_job_def("demo_job")
    assert isinstance(job, dg.JobDefinition)


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


def test_shared_location_has_no_partitioned_asset_so_select_star_needs_no_partition():
    """The design constraint behind the two code locations (DESIGN.md)."""
    graph = defs.resolve_asset_graph()
    assert all(graph.get(k).partitions_def is None for k in graph.materializable_asset_keys)
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {("raw_pool", "ids_unique"), ("gradient_datastore", "finite_gradients"),
                      ("gradient_datastore", "shape_matches_pool"),
                      ("target_gradients", "finite_gradients"),
                      ("scored_subsets", "ids_unique"), ("scored_subsets", "budget_respected"),
                      ("scored_subsets", "lineage_complete")}
    assert {s.name for s in defs.schedules} == {"nightly_refresh"}
    assert {s.name for s in defs.sensors} == {"new_pool_files"}
    refresh = defs.resolve_job_def("refresh_job")
    assert {k.to_user_string() for k in refresh.asset_layer.selected_asset_keys} == \
        {k.to_user_string() for k in graph.materializable_asset_keys} - {"benchmark_report"}


def test_subsets_location_partitions_by_config_hash_and_reads_the_shared_graph():
    from pipelines.subsets import defs as subsets

    graph = subsets.resolve_asset_graph()
    materializable = {k.to_user_string() for k in graph.materializable_asset_keys}
    assert materializable == {"scored_subset", "dataset_release", "distilled_set"}
    for key in graph.materializable_asset_keys:
        assert graph.get(key).partitions_def.name == "selector_config"
    external = {k.to_user_string() for k in graph.get_all_asset_keys()} - materializable
    assert external == {"raw_pool", "target_set", "test_set", "model_inputs", "warmup_proxy",
                        "gradient_datastore", "target_gradients"}
    assert all(spec.blocking for check in subsets.asset_checks for spec in check.check_specs)
    assert {j.name for j in subsets.jobs} == {"subset_job", "release_job"}
