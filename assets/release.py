"""dataset_release[config]: an immutable, DVC-versioned release of one scored subset."""

import time
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field, field_validator

from assets import _metadata as md
from assets.subset import SELECTOR_CONFIGS
from curation.errors import CurationError
from curation.release import check_version, create_release
from resources import CatalogResource, DvcRepository


class ReleaseConfig(dg.Config):
    version: str = Field(description="Release version (v1, 2024.06, ...); a released version "
                                     "can never be released again.")

    @field_validator("version")
    @classmethod
    def _valid_version(cls, version: str) -> str:
        try:
            return check_version(version)
        except CurationError as exc:
            raise ValueError(str(exc)) from None


@dg.asset(partitions_def=SELECTOR_CONFIGS, kinds={"dvc", "parquet"}, group_name="releases",
          description="The subset as Parquet + lineage.json + dataset card, tracked by DVC "
                      "(releases/<version>.dvc), pushed to the DVC remote, in the catalog.")
def dataset_release(config: ReleaseConfig, catalog: CatalogResource, dvc: DvcRepository,
                    scored_subset: dict) -> dg.Output[dict]:
    started = time.perf_counter()
    release = create_release(catalog.catalog(), scored_subset["selection_id"], config.version,
                             repo_root=dvc.repo_root, remote=dvc.remote)
    files = pd.DataFrame(release["files"])[["relpath", "size", "md5"]]
    return dg.Output(
        {k: release[k] for k in ("version", "directory", "dvc_file", "dvc_md5", "n_rows")},
        metadata={
            "version": release["version"], "rows": release["n_rows"],
            "selection_id": scored_subset["selection_id"], "dvc_file": release["dvc_file"],
            "dvc_md5": release["dvc_md5"], "remote": f"{release['remote']} ({release['remote_url']})",
            "files": md.table(files),
            "card": dg.MetadataValue.md(Path(release["directory"], "README.md").read_text()),
            "seconds": round(time.perf_counter() - started, 2)})
