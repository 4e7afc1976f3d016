"""The DuckDB catalog as a Dagster resource."""

import dagster as dg
from pydantic import Field

from curation.catalog import Catalog
from resources.storage import default_root


class CatalogResource(dg.ConfigurableResource):
    """One DuckDB file; writes are short transactions that retry while another process writes."""

    path: str = Field(default_factory=lambda: f"{default_root()}/catalog.duckdb",
                      description="The catalog database file.")
    lock_timeout: float = Field(default=120.0, description="Seconds to wait for a busy catalog.")

    def catalog(self) -> Catalog:
        return Catalog(self.path, self.lock_timeout)
