"""Dagster resources: where artifacts live and the DuckDB catalog."""

from resources.catalog import CatalogResource
from resources.storage import ArtifactStore

__all__ = ["ArtifactStore", "CatalogResource"]
