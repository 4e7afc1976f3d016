"""model_inputs: the numeric input of every split (features, or cached text embeddings)."""

import time

import dagster as dg

from curation.embed import EMBEDDING_MODEL, input_matrix
from curation.io import write_npy
from curation.pool import load_pool
from resources import ArtifactStore


@dg.asset(kinds={"numpy"}, group_name="data",
          description=f"Inputs of pool, target and test: features, or {EMBEDDING_MODEL} "
                      "embeddings of the text (computed once, cached by content).")
def model_inputs(context: dg.AssetExecutionContext, artifacts: ArtifactStore, raw_pool: str,
                 target_set: str, test_set: str) -> dg.Output[dict]:
    paths, rows = {}, {}
    started = time.perf_counter()
    for role, source in (("pool", raw_pool), ("target", target_set), ("test", test_set)):
        pool = load_pool(source, role=role)
        context.log.info(f"inputs of {role}: {len(pool)} rows ({pool.input_column})")
        matrix = input_matrix(pool, artifacts.work_dir / "embeddings")
        path = artifacts.path("inputs", pool.content_hash[:16], f"{role}.npy")
        write_npy(path, matrix)
        paths[role], rows[role] = str(path), matrix.shape
    return dg.Output(paths, metadata={
        "dims": rows["pool"][1], **{f"{k}_rows": v[0] for k, v in rows.items()},
        "seconds": round(time.perf_counter() - started, 2)})
