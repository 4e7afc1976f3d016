"""scored_subsets: every configured selector at every budget, with lineage, into the catalog."""

import functools

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from assets import _metadata as md
from assets._metadata import check_choices
from curation.datastore import open_datastore
from curation.errors import CurationError
from curation.io import write_json, write_parquet
from curation.lineage import selection_lineage
from curation.pool import load_pool
from curation.proxy import load_proxy, predict_probabilities
from curation.selectors import SELECTORS, SelectionInputs, make_selector
from resources import ArtifactStore, CatalogResource


class SelectionConfig(dg.Config):
    methods: list[str] = Field(default=["random", "less", "el2n", "gtp"],
                               description="Selectors to run (random, less, el2n, gtp).")
    budgets: list[float] = Field(default=[0.01, 0.05, 0.1],
                                 description="Budgets: fractions of the pool (<1) or counts.")
    random_seeds: list[int] = Field(default=[0, 1, 2],
                                    description="Seeds of the random baseline (one subset each).")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        return check_choices(methods, tuple(SELECTORS))


@dg.asset(kinds={"parquet", "duckdb"}, group_name="selection",
          description="Subsets chosen by each selector and budget; Parquet + lineage JSON each.")
def scored_subsets(context: dg.AssetExecutionContext, config: SelectionConfig,
                   artifacts: ArtifactStore, catalog: CatalogResource, raw_pool: str,
                   target_set: str, model_inputs: dict, gradient_datastore: dict,
                   target_gradients: dict, warmup_proxy: str) -> dg.Output[list[dict]]:
    pool, target = load_pool(raw_pool), load_pool(target_set)
    selectors = [make_selector(m, seed=s) if m == "random" else make_selector(m)
                 for m in config.methods
                 for s in (config.random_seeds if m == "random" else [None])]
    inputs = SelectionInputs(
        pool.ids, lambda kind: _store(gradient_datastore, kind),
        lambda kind: _store(target_gradients, kind),
        functools.cache(lambda: (
            predict_probabilities(load_proxy(warmup_proxy), np.load(model_inputs["pool"])),
            pool.labels)))
    records = []
    for selector in selectors:
        for budget in config.budgets:
            selection = selector.select(inputs, budget)
            store = open_datastore(next(iter(gradient_datastore.values())), verify=False)
            lineage = selection_lineage(
                selector.config(), budget=budget, k=len(selection), pool_id=pool.content_hash,
                datastore_id=store.store_id, proxy_checkpoints=store.manifest["proxy_checkpoints"],
                target_id=target.content_hash)
            lineage["selection_info"] = selection.info
            selection_id = catalog.catalog().record_selection(selection, lineage)
            path = artifacts.path("selections", f"{selection_id}.parquet")
            write_json(path.with_suffix(".lineage.json"), lineage)
            write_parquet(path, selection.to_table())
            context.log.info(f"{selector.name} budget={budget}: {len(selection)} examples")
            records.append({"method": selector.name, "budget": budget,
                            "seed": getattr(selector, "seed", 0), "k": len(selection),
                            "selection_id": selection_id, "path": str(path),
                            "config_hash": lineage["config_hash"]})
    frame = pd.DataFrame(records)[["method", "budget", "seed", "k", "config_hash"]]
    return dg.Output(records, metadata={"subsets": md.table(frame), "count": len(records)})


def _store(paths: dict, kind: str):
    if kind not in paths:
        raise CurationError(
            f"no {kind!r} gradient store: add {kind!r} to the gradient_datastore config 'kinds'"
        )
    return open_datastore(paths[kind])
