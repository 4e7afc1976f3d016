"""Configs declared once: validation errors, the derived Dagster config and CLI options."""

from typing import Annotated

import dagster as dg
import pytest
import typer
from pydantic import Field, model_validator
from typer.testing import CliRunner

from assets._config import derived_config
from curation.cli.options import config_options
from curation.config import choice, config
from curation.errors import CurationError


@config("warm-up")
class Warmup:
    kind: choice(("sgd", "adam")) = Field(default="sgd", description="Feature kind.")
    epochs: int = Field(default=4, gt=0, description="Epochs.")
    checkpoints: int = Field(default=2, ge=1, description="Checkpoints kept.")

    @model_validator(mode="after")
    def _checkpoints_fit(self):
        if self.checkpoints > self.epochs:
            raise ValueError(f"'checkpoints' must be at most 'epochs' ({self.epochs})")
        return self


@pytest.mark.parametrize(("values", "message"), [
    ({"epochs": 0}, "warm-up 'epochs': Input should be greater than 0 (got 0)"),
    ({"kind": "sgdd"}, "warm-up 'kind': Input should be 'sgd' or 'adam' (got 'sgdd')"),
    ({"checkpoints": 5}, "warm-up: 'checkpoints' must be at most 'epochs' (4)"),
    ({"epoch": 3}, "warm-up 'epoch': Unexpected keyword argument"),
])
def test_bad_value_is_one_line_naming_the_field(values, message):
    with pytest.raises(CurationError) as caught:
        Warmup(**values)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_positional_values_are_named_in_errors():
    assert Warmup("adam", 5) == Warmup(kind="adam", epochs=5)
    with pytest.raises(CurationError, match="warm-up 'epochs': Input should be greater than 0"):
        Warmup("adam", 0)


def test_configs_are_frozen_and_hashable():
    first = Warmup(epochs=6)
    with pytest.raises(Exception, match="cannot assign"):
        first.epochs = 3
    assert hash(first) == hash(Warmup(epochs=6))


def test_dagster_config_takes_the_core_fields():
    class WarmupAssetConfig(derived_config("WarmupBase", Warmup)):
        pass

    seen = []

    @dg.asset
    def warmed(config: WarmupAssetConfig) -> None:
        seen.append(config.to_core(Warmup))

    assert dg.materialize([warmed], run_config={
        "ops": {"warmed": {"config": {"epochs": 5, "kind": "adam"}}}}).success
    assert seen == [Warmup(kind="adam", epochs=5)]
    fields = WarmupAssetConfig.model_fields
    assert fields["epochs"].default == 4 and fields["epochs"].description == "Epochs."
    assert not dg.materialize([warmed], raise_on_error=False, run_config={
        "ops": {"warmed": {"config": {"epochs": 0}}}}).success


def test_cli_options_take_the_core_fields():
    app = typer.Typer()
    got = []

    @app.command()
    @config_options(Warmup, "warmup", only=("kind", "epochs"), defaults={"epochs": 6})
    def run(out: Annotated[str, typer.Option()], warmup: Warmup) -> None:
        got.append((out, warmup))

    @app.command()
    def other() -> None:
        """A second command, so typer keeps subcommand names."""

    runner = CliRunner()
    help_text = runner.invoke(app, ["run", "--help"]).output
    assert "Feature kind." in help_text and "--checkpoints" not in help_text
    assert runner.invoke(app, ["run", "--out", "x", "--kind", "adam"]).exit_code == 0
    assert got == [("x", Warmup(kind="adam", epochs=6))]
    refused = runner.invoke(app, ["run", "--out", "x", "--epochs", "0"])
    assert refused.exit_code == 2
    assert "warm-up 'epochs': Input should be greater than 0" in refused.output


def test_cli_choice_is_text_checked_by_the_config_and_parsers_read_text():
    @config("spec")
    class Spec:
        kind: choice(("sgd", "adam")) = Field(default="sgd", description="Kind.")
        names: str | tuple[str, ...] = Field(default="all", description="Names.")

    app = typer.Typer()
    got = []

    @app.command()
    @config_options(Spec, "spec", parsers={"names": lambda text: tuple(text.split(","))})
    def run(out: "Annotated[str, typer.Option()]", spec: Spec) -> None:  # a string annotation
        got.append((out, spec))

    @app.command()
    def other() -> None:
        """A second command, so typer keeps subcommand names."""

    runner = CliRunner()
    help_text = runner.invoke(app, ["run", "--help"]).output
    assert "[sgd|adam]" in help_text and "--out" in help_text
    assert runner.invoke(app, ["run", "--out", "x", "--names", "a,b"]).exit_code == 0
    assert got == [("x", Spec(names=("a", "b")))]
    refused = runner.invoke(app, ["run", "--out", "x", "--kind", "sgdd"])
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1
    assert "spec 'kind': Input should be 'sgd' or 'adam' (got 'sgdd')" in refused.output
