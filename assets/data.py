"""raw_pool, target_set, test_set: the three splits, from a demo scenario or the user's files."""

import dagster as dg
from pydantic import Field

from assets import _metadata as md
from assets._config import derived_config
from curation.demo_data import ScenarioConfig, build_scenario
from curation.io import write_parquet
from curation.pool import Pool, load_pool, validate_table
from resources import ArtifactStore, CatalogResource

SPLITS = ("raw_pool", "target_set", "test_set")


class SplitsConfig(derived_config(
        "SplitsConfigBase", ScenarioConfig,
        pool_path=(str | None, Field(default=None, description="Your pool file (overrides demo).")),
        target_path=(str | None, Field(default=None, description="Your target set file.")),
        test_path=(str | None, Field(default=None, description="Your test split file.")))):
    """Either a demo scenario (default; its fields from ``ScenarioConfig``) or three files in the
    data contract."""


@dg.multi_asset(
    outs={name: dg.AssetOut(kinds={"parquet"}, group_name="data") for name in SPLITS},
    description="Validated pool, target set and test split in the data contract.",
)
def splits(config: SplitsConfig, artifacts: ArtifactStore, catalog: CatalogResource):
    pools, card = (_user_splits(config), None) if config.pool_path else _demo_splits(config)
    for name, role, pool in zip(SPLITS, ("pool", "target", "test"), pools, strict=True):
        path = artifacts.path("splits", pool.content_hash[:16], f"{role}.parquet")
        write_parquet(path, pool.table)
        catalog.catalog().record_pool(pool, role, path=path)
        metadata = {"rows": len(pool), "input": pool.input_column, "path": str(path),
                    "pool_id": pool.content_hash}
        if pool.has_labels:
            metadata["labels"] = md.histogram(pool.labels)
        if card is not None and role == "pool":  # what the scenario dropped, its sources
            metadata["data_card"] = dg.MetadataValue.json(card)
        yield dg.Output(str(path), output_name=name, metadata=metadata)


def _demo_splits(config: SplitsConfig) -> tuple[list[Pool], dict | None]:
    tables = build_scenario(config.to_core(ScenarioConfig))
    # Instruct splits are LM data: prompt/response, labels only where a test row has choices.
    labelled = config.scenario != "instruct"
    return [validate_table(t, source=f"{config.scenario}:{role}", require_label=labelled)
            for role, t in zip(("pool", "target", "test"), (tables.pool, tables.target,
                                                            tables.test), strict=True)], tables.card


def _user_splits(config: SplitsConfig) -> list[Pool]:
    if not (config.target_path and config.test_path):
        raise dg.Failure("config 'pool_path' needs 'target_path' and 'test_path' too")
    pool = load_pool(config.pool_path, role="pool")
    return [pool, load_pool(config.target_path, role="target", pool=pool),
            load_pool(config.test_path, role="test", pool=pool)]
