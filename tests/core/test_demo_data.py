import pytest

from curation.demo_data import ScenarioConfig, build_scenario, newsgroups_frame
from curation.errors import CurationError
from curation.pool import validate_table


def test_newsgroups_is_the_real_corpus():
    train, test = newsgroups_frame("train"), newsgroups_frame("test")
    assert train["label"].nunique() == 20 and 10_000 < len(train) < 12_000
    assert 7_000 < len(test) < 8_000
    assert (train["text"].str.len() > 0).all() and train["id"].is_unique


def test_targeted_text_scenario():
    tables = build_scenario(ScenarioConfig("targeted-text", pool_size=500, target_size=30))
    pool, target, test = (validate_table(t, source=n) for t, n in
                          zip((tables.pool, tables.target, tables.test), "ptt", strict=True))
    assert len(pool) == 500 and len(target) == 30
    assert set(target.table.column("domain").to_pylist()) == {"sci"}
    assert set(test.table.column("domain").to_pylist()) == {"sci"}
    assert len(set(pool.table.column("domain").to_pylist())) > 4
    assert not set(pool.ids) & set(target.ids)
    again = build_scenario(ScenarioConfig("targeted-text", pool_size=500, target_size=30))
    assert again.pool.equals(tables.pool)


def test_image_scenarios_have_disjoint_splits():
    tables = build_scenario(ScenarioConfig("images", pool_size=1000, target_size=50,
                                           test_size=500))
    assert tables.pool.num_rows == 1000 and tables.test.num_rows == 500
    ids = [set(t.column("id").to_pylist()) for t in (tables.pool, tables.target, tables.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


@pytest.mark.parametrize("values, message", [
    ({"scenario": "nope"}, "scenario 'scenario': Input should be 'targeted-text', 'general-text', "
                           "'noisy-text', 'images', 'digits' or 'instruct'"),
    ({"scenario": "targeted-text", "domain": "xyz"}, "unknown domain"),
    ({"scenario": "digits", "pool_size": 1797}, "pool_size \\+ target_size"),
    ({"scenario": "digits", "target_size": 0}, "scenario 'target_size': Input should be greater than 0"),
    ({"scenario": "digits", "test_size": -1}, "scenario 'test_size': Input should be greater than"),
])
def test_bad_scenarios_are_clear(values, message):
    with pytest.raises(CurationError, match=message):
        build_scenario(ScenarioConfig(**values))


def test_every_scenario_is_a_dagster_and_cli_choice():
    from typer.testing import CliRunner

    from assets.data import SplitsConfig
    from curation.cli import app
    from curation.demo_data import SCENARIOS

    for name in SCENARIOS:
        assert SplitsConfig(scenario=name).to_core(ScenarioConfig) == ScenarioConfig(name)
    help_text = " ".join(CliRunner().invoke(app, ["demo-data", "--help"]).stdout.replace("│", " ").split())
    assert all(name in help_text for name in SCENARIOS) and "[default: 3000]" in help_text
