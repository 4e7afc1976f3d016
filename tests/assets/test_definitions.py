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
