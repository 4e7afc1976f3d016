"""gradient_datastore and target_gradients: projected per-example gradient trajectories."""


import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from assets import _metadata as md
from assets._config import derived_config
from assets._metadata import check_choices
from curation.config import config_fields
from curation.datastore import DatastoreSpec, GradientStore, parse_params
from curation.errors import CurationError
from curation.gradients import FEATURE_KINDS
from curation.pool import load_pool
from curation.proxies import kind_of, load_trained_proxy
from curation.workflow import cached_store
from resources import ArtifactStore, CatalogResource


class DatastoreConfig(derived_config(
        "DatastoreConfigBase", (DatastoreSpec, ("dim", "dtype", "shard_size", "seed", "projection")),
        kinds=(list[str], Field(default=["sgd", "adam"], description="Feature kinds to store: "
                                "sgd (plain) and/or adam (LESS).")),
        params=(str, Field(default="all", description=config_fields(DatastoreSpec)["params"].description)),
        scheduler=(str | None, Field(
            default=None, description="Dask scheduler address: compute shards on its workers "
                                      "(they must share the artifact directory). Same bytes.")))):
    """The pool's datastore spec (its fields from ``DatastoreSpec``), built for several kinds."""

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        return check_choices(kinds, FEATURE_KINDS)

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: str) -> str:
        try:
            DatastoreSpec(params=parse_params(params))
        except CurationError as exc:
            raise ValueError(str(exc)) from None
        return params

    def spec(self, kind: str) -> DatastoreSpec:
        return self.to_core(DatastoreSpec, kind=kind, params=parse_params(self.params))


def _build(split_path: str, inputs_path: str, proxy_dir: str, config: DatastoreConfig,
           kinds: list[str], artifacts: ArtifactStore) -> dict[str, GradientStore]:
    data = load_pool(split_path, require_label=False)
    proxy = load_trained_proxy(proxy_dir)
    proxy_kind = kind_of(proxy)
    inputs, targets = proxy_kind.store_inputs(proxy, data, inputs_path)
    specs = {kind: proxy_kind.store_spec(config.spec(kind)) for kind in kinds}
    return {kind: cached_store(artifacts.work_dir, proxy, inputs, targets, data.ids,
                               data.content_hash, spec, scheduler=config.scheduler)
            for kind, spec in specs.items()}


def _throughput(stores: dict[str, GradientStore]) -> tuple[float | None, bool]:
    """Examples/s of the builds that computed these stores' shards; and whether all were reused."""
    reports = [s.report for s in stores.values() if s.report and s.report.rows_computed]
    reused = not reports
    stats = [{"rows": r.rows_computed, "seconds": r.seconds} for r in reports] or [
        {"rows": st["rows_computed"], "seconds": st["seconds"]}
        for st in (s.last_build_stats() for s in stores.values()) if st]
    rows, seconds = sum(s["rows"] for s in stats), sum(s["seconds"] for s in stats)
    return (rows / seconds if rows and seconds > 0 else None), reused


def _metadata(stores: dict[str, GradientStore], scheduler: str | None) -> dict:
    first = next(iter(stores.values()))
    manifest = first.manifest
    projection = manifest["projection"]
    fig, ax = md.figure()
    for c in range(first.checkpoints):
        norms = np.concatenate([np.linalg.norm(sh[:, c].astype(np.float32), axis=1)
                                for sh in first.shards()])
        ax.hist(norms, bins=40, alpha=0.5, label=f"checkpoint {c + 1}")
    ax.set(xlabel=f"projected {manifest['feature_kind']} gradient norm", ylabel="examples")
    ax.legend()
    rate, reused = _throughput(stores)
    return {
        "n": first.n, "dim": first.dim, "checkpoints": first.checkpoints,
        "dtype": manifest["dtype"], "bytes_on_disk": sum(s.nbytes for s in stores.values()),
        **({"examples_per_second": round(rate, 1)} if rate else {}),
        "reused_existing_store": reused,
        "projection": f"{projection['kind']} (seed {projection['seed']}): gradients of "
                      f"{manifest['n_params']:,} parameters ({', '.join(manifest['param_names'])})"
                      f" -> {first.dim} dims per checkpoint, scale {projection['scale']}",
        "scheduler": scheduler or "in-process",
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
    stores = _build(raw_pool, model_inputs["pool"], warmup_proxy, config, config.kinds,
                    artifacts)
    for store in stores.values():
        catalog.catalog().record_datastore(store.manifest, str(store.directory))
        context.log.info(f"{store.manifest['feature_kind']} store {store.store_id}: {store.n} rows")
    return dg.Output({k: str(s.directory) for k, s in stores.items()},
                     metadata=_metadata(stores, config.scheduler))


@dg.asset(kinds={"numpy"}, group_name="gradients",
          description="Plain (SGD) projected gradient trajectories of the target examples.")
def target_gradients(config: DatastoreConfig, artifacts: ArtifactStore, target_set: str,
                     model_inputs: dict, warmup_proxy: str) -> dg.Output[dict]:
    stores = _build(target_set, model_inputs["target"], warmup_proxy, config, ["sgd"], artifacts)
    return dg.Output({k: str(s.directory) for k, s in stores.items()},
                     metadata=_metadata(stores, config.scheduler))
