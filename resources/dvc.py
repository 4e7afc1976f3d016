"""The project's DVC repository and the remote that releases are pushed to."""

import os

import dagster as dg
from pydantic import Field


class DvcRepository(dg.ConfigurableResource):
    """Where releases are tracked (``releases/<version>.dvc``) and pushed."""

    repo_root: str = Field(default_factory=lambda: os.environ.get("CURATION_DVC_REPO", "."),
                           description="A directory inside the DVC repository; "
                                       "$CURATION_DVC_REPO or the working directory.")
    remote: str | None = Field(default=None,
                               description="DVC remote name; None uses the repository's default "
                                           "remote (core.remote in .dvc/config).")
