"""gradient_datastore and target_gradients: projected per-example gradient trajectories."""

import time
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from assets import _metadata as md
from assets._metadata import check_choices
from curation.datastore import DatastoreSpec, GradientStore
from curation.gradients import FEATURE_KINDS
from curation.pool import load_pool
from curation.proxy import load_proxy
from curation.workflow import cached_store
from resources import ArtifactStore, CatalogResource


class DatastoreConfig(dg.Config):
    kinds: list[str] = Field(default=["sgd", "adam"],
                             description="Feature kinds to store: sgd (plain) and/or adam (LESS).")
    dim: int = Field(default=1024, gt=0, description="Projection dimension per checkpoint.")
    dtype: Literal["float16", "float32"] = Field(default="float16", description="Stored dtype.")
    shard_size: int = Field(default=8192, description="Examples per shard.")
    seed: int = Field(default=0, description="Projection seed.")

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        return check_choices(kinds, FEATURE_KINDS)

    def spec(self, kind: str) -> DatastoreSpec:
        return DatastoreSpec(kind=kind, dim=self.dim, dtype=self.dtype,
                             shard_size=self.shard_size, seed=self.seed)


def _build(split_path: str, inputs_path: str, proxy_dir: str, specs: list[DatastoreSpec],
           artifacts: ArtifactStore) -> tuple[dict[str, GradientStore], float]:
    data = load_pool(split_path)
    inputs = np.load(inputs_path)
    proxy = load_proxy(proxy_dir)
    started = time.perf_counter()
    stores = {spec.kind: cached_store(artifacts.work_dir, proxy, inputs, data.labels, data.ids,
                                      data.content_hash, spec) for spec in specs}
    return stores, time.perf_counter() - started


def _metadata(stores: dict[str, GradientStore], seconds: float) -> dict:
    first = next(iter(stores.values()))
    n_bytes = sum((s.directory / sh["file"]).stat().st_size
                  for s in stores.values() for sh in s.manifest["shards"])
    fig, ax = md.figure()
    for c in range(first.checkpoints):
        norms = np.concatenate([np.linalg.norm(sh[:, c].astype(np.float32), axis=1)
                                for sh in first.shards()])
        ax.hist(norms, bins=40, alpha=0.5, label=f"checkpoint {c + 1}")
    ax.set(xlabel=f"projected {first.manifest['feature_kind']} gradient norm", ylabel="examples")
    ax.legend()
    return {
        "n": first.n, "dim": first.dim, "checkpoints": first.checkpoints,
        "dtype": first.manifest["dtype"], "bytes_on_disk": n_bytes,
        "examples_per_second": round(first.n * len(stores) / max(seconds, 1e-9), 1),
        "stores": md.table(pd.DataFrame(
            [{"kind": k, "datastore_id": s.store_id, "directory": str(s.directory)}
             for k, s in stores.items()])),
        "gradient_norms": md.plot(fig),
    }


@dg.asset(kinds={"numpy"}, group_name="gradients",
          description="Sharded store of the pool's projected gradient trajectories, per feature kind.")
def gradient_datastore(context: dg.AssetExecutionContext, config: DatastoreConfig,
                       artifacts: ArtifactStore, catalog: CatalogResource, raw_pool: str,
                       model_inputs: dict, warmup_proxy: str) -> dg.Output[dict]:
    stores, seconds = _build(raw_pool, model_inputs["pool"], warmup_proxy,
                             [config.spec(k) for k in config.kinds], artifacts)
    for store in stores.values():
        catalog.catalog().record_datastore(store.manifest, str(store.directory))
        context.log.info(f"{store.manifest['feature_kind']} store {store.store_id}: {store.n} rows")
    return dg.Output({k: str(s.directory) for k, s in stores.items()},
                     metadata=_metadata(stores, seconds))


@dg.asset(kinds={"numpy"}, group_name="gradients",
          description="Plain (SGD) projected gradient trajectories of the target examples.")
def target_gradients(config: DatastoreConfig, artifacts: ArtifactStore, target_set: str,
                     model_inputs: dict, warmup_proxy: str) -> dg.Output[dict]:
    stores, seconds = _build(target_set, model_inputs["target"], warmup_proxy,
                             [config.spec("sgd")], artifacts)
    return dg.Output({k: str(s.directory) for k, s in stores.items()},
                     metadata=_metadata(stores, seconds))
