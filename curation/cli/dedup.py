"""``curation dedup``: a pool without its near-duplicates, and the groups that were merged."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curation.cli.common import console, default_home, user_errors
from curation.cli.options import config_options
from curation.dedup import DedupConfig
from curation.errors import CurationError


@config_options(DedupConfig, "config", exclude=("batch_rows",))
def dedup(
    pool: Annotated[Path, typer.Option(help="Pool: Parquet, datasets directory, json/csv.")],
    out: Annotated[Path, typer.Option(help="Kept pool Parquet to write (the groups table "
                                           "beside it, <name>.groups.parquet).")],
    config: DedupConfig,
    store: Annotated[Path | None, typer.Option(help="--on gradients: a gradient datastore "
                                                    "built on this pool.")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Cache for embeddings.")] = None,
) -> None:
    """Remove near-duplicates from POOL: one row (the smallest id) kept per group of rows whose
    cosine similarity is at least --threshold."""
    from curation.dedup import dedup_vectors, find_duplicates, write_dedup
    from curation.pool import load_pool

    with user_errors():
        if out.suffix != ".parquet":
            raise CurationError(f"--out must be a .parquet path, got {out}")
        if store is not None and config.on != "gradients":
            raise CurationError(f"--store is read by --on gradients only, not --on {config.on}")
        pool_data = load_pool(pool, role="pool", require_label=False)
        vectors = dedup_vectors(pool_data, config.on, store=store,
                                cache_dir=(work_dir or default_home() / "work") / "embeddings")
        result = find_duplicates(pool_data.ids, vectors, config.threshold, config.batch_rows)
        kept, groups = write_dedup(pool_data, result, out)
    console.print(f"kept {len(result.keep)} of {len(pool_data)} rows ({result.n_removed} "
                  f"near-duplicates in {len(result.kept_rows)} groups at cosine >= "
                  f"{config.threshold}, on {config.on}) -> {kept}")
    console.print(f"groups -> {groups}")
