"""``curation demo-data``: a real demo scenario as pool / target / test Parquet files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pyarrow.parquet as pq
import typer

from curation.cli.common import console, user_errors
from curation.cli.options import config_options
from curation.demo_data import ScenarioConfig


@config_options(ScenarioConfig, "config")
def demo_data(
    out: Annotated[Path, typer.Option(help="Directory for pool/target/test Parquet files.")],
    config: ScenarioConfig,  # built from the options by config_options
) -> None:
    """Write a real demo scenario as pool / target / test Parquet files."""
    from curation.demo_data import write_scenario
    from curation.io import check_output_dir

    with user_errors():
        check_output_dir(out, "--out")
        paths = write_scenario(config, out)
    for name in ("pool", "target", "test"):
        path = getattr(paths, name)
        console.print(f"{name:6s} {pq.read_metadata(path).num_rows:6d} rows  {path}")
