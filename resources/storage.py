"""Artifact storage: one root directory, content-addressed subdirectories under it."""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field


def default_root() -> str:
    return os.environ.get("CURATION_HOME", ".curation")


class ArtifactStore(dg.ConfigurableResource):
    """Local artifact root (pools, embeddings, proxies, datastores, selections, reports)."""

    root: str = Field(default_factory=default_root,
                      description="Directory for all artifacts; $CURATION_HOME by default.")

    def path(self, *parts: str) -> Path:
        path = Path(self.root).joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def work_dir(self) -> Path:
        """The content-addressed cache shared with the CLI (proxies, datastores, embeddings)."""
        return self.path("work", "x").parent
