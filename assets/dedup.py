"""deduped_pool: the pool without its near-duplicates, and the groups that were merged.

It sits ahead of the proxy. A text pool is compared by hashed TF-IDF of its words by default
(``on: text``; on planted copies it finds far more than MiniLM does, ``benchmarks/bench_dedup.py``),
a features pool by its features; ``on: inputs`` compares the model inputs (features, or the
text's MiniLM embeddings) as the proxy sees them.
The chain keeps reading ``raw_pool``: removing rows changes what every later stage sees, so using
the kept pool is a choice (give its path to ``splits`` as the pool file, or to the pool dropbox).
"""

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from assets import _metadata as md
from assets._config import derived_config
from curation.config import choice
from curation.dedup import DedupConfig, find_duplicates, text_vectors, write_dedup
from curation.pool import load_pool
from resources import ArtifactStore

# Groups shown in the UI: enough to judge the threshold by eye.
_EXAMPLES = 5


class DedupAssetConfig(derived_config(
        "DedupFields", (DedupConfig, ("threshold", "batch_rows")),
        on=(choice(("text", "inputs")), Field(
            default="text", description="text: hashed TF-IDF of a text pool's words (a features "
            "pool: its features); inputs: the model inputs (features or MiniLM embeddings)")))):
    """The threshold and batch size of ``DedupConfig``, and which vectors are compared."""


@dg.asset(kinds={"parquet", "faiss"}, group_name="data",
          description="The pool with one row (the smallest id) per group of near-duplicates "
                      "(cosine >= threshold on the model inputs), plus the groups table.")
def deduped_pool(config: DedupAssetConfig, artifacts: ArtifactStore, raw_pool: str,
                 model_inputs: dict) -> dg.Output[dict]:
    pool = load_pool(raw_pool, role="pool", require_label=False)
    by_text = config.on == "text" and pool.input_column != "features"
    vectors = text_vectors(pool.texts) if by_text else np.load(model_inputs["pool"])
    result = find_duplicates(pool.ids, vectors, config.threshold, config.batch_rows)
    on = "text" if by_text else "inputs"
    directory = artifacts.path("dedup", f"{pool.content_hash[:16]}-{on}-{config.threshold}",
                               "x").parent
    kept, groups = write_dedup(pool, result, directory / "pool.parquet")
    examples = pd.DataFrame([
        {"kept_id": pool.ids[k], "removed_ids": ", ".join(pool.ids[r]), "size": len(r) + 1}
        for k, r in zip(result.kept_rows[:_EXAMPLES], result.removed_rows[:_EXAMPLES],
                        strict=False)])
    return dg.Output({"pool": str(kept), "groups": str(groups)}, metadata={
        "rows": len(pool), "kept": len(result.keep), "removed": result.n_removed,
        "groups": len(result.kept_rows), "threshold": config.threshold, "on": on,
        "example_groups": md.table(examples) if len(examples) else "(no near-duplicates)",
        "kept_pool": dg.MetadataValue.path(str(kept))})
