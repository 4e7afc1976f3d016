"""The watched directory that new pool files land in."""

import os

import dagster as dg
from pydantic import Field

from resources.storage import default_root


class PoolDropbox(dg.ConfigurableResource):
    """New pool files landing here start a refresh of the pool-dependent assets."""

    directory: str = Field(
        default_factory=lambda: os.environ.get("CURATION_WATCH_DIR", f"{default_root()}/incoming"),
        description="Watched directory; $CURATION_WATCH_DIR or $CURATION_HOME/incoming.")
    pattern: str = Field(default="pool*.parquet", description="Glob of pool files.")
    target: str = Field(default="target.parquet",
                        description="Target set used with every pool (relative to the directory).")
    test: str = Field(default="test.parquet",
                      description="Test split used with every pool (relative to the directory).")
