"""Dagster resources: artifact storage, the DuckDB catalog, the DVC repository, the pool dropbox."""

from resources.catalog import CatalogResource
from resources.dropbox import PoolDropbox
from resources.dvc import DvcRepository
from resources.storage import ArtifactStore

__all__ = ["ArtifactStore", "CatalogResource", "DvcRepository", "PoolDropbox"]
