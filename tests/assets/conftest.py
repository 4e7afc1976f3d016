"""One materialization of the shared graph on tiny real data, reused by the asset tests.

It lives in a real Dagster instance directory (``DAGSTER_HOME``-style, with the default
filesystem IO manager under it), so in-process runs and ``dagster`` subprocesses started
with that ``DAGSTER_HOME`` load the same upstream outputs.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from assets.checks import CHECKS
from pipelines.definitions import UNPARTITIONED_ASSETS
from resources import ArtifactStore, CatalogResource
from tests.conftest import tiny_run_config

# What the per-config assets read from the unpartitioned chain: loaded, in tests that materialize
# only the per-config assets, from the instance's IO manager storage of an earlier run.
UPSTREAM = ("raw_pool", "target_set", "model_inputs", "warmup_proxy", "gradient_datastore",
            "target_gradients")


@dataclass
class Materialized:
    dagster_home: Path
    curation_home: Path
    instance: dg.DagsterInstance
    result: dg.ExecuteInProcessResult

    @property
    def catalog_path(self) -> Path:
        return self.curation_home / "catalog.duckdb"

    def resources(self, **extra) -> dict:
        return {"artifacts": ArtifactStore(root=str(self.curation_home)),
                "catalog": CatalogResource(path=str(self.catalog_path)), **extra}

    def env(self) -> dict:
        return {**os.environ, "CURATION_HOME": str(self.curation_home),
                "DAGSTER_HOME": str(self.dagster_home), "DAGSTER_DISABLE_TELEMETRY": "1"}


@pytest.fixture(scope="session")
def materialized(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("materialized")
    dagster_home = base / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        state = Materialized(dagster_home, base / "curation_home", instance, None)
        run_config = tiny_run_config("digits", methods=("random", "less", "el2n", "gtp"))
        run_config["ops"].pop("benchmark_report")
        state.result = dg.materialize(
            [*UNPARTITIONED_ASSETS, *CHECKS], resources=state.resources(), instance=instance,
            run_config=run_config,
            selection=dg.AssetSelection.all() - dg.AssetSelection.assets("benchmark_report"))
        assert state.result.success
        yield state
