"""scored_subsets: every configured selector at every budget, with lineage, into the catalog."""

import time

import dagster as dg
import pandas as pd
from pydantic import Field, field_validator

from assets import _metadata as md
from assets._metadata import check_choices
from curation.pool import load_pool
from curation.selection import inputs_from_artifacts, select_and_save
from curation.selectors import SELECTORS, make_selector, takes_seed
from resources import ArtifactStore, CatalogResource


class SelectionConfig(dg.Config):
    methods: list[str] = Field(default=["random", "less", "el2n", "gtp"],
                               description=f"Selectors to run ({', '.join(SELECTORS)}).")
    budgets: list[float] = Field(default=[0.01, 0.05, 0.1],
                                 description="Budgets: fractions of the pool (<1) or counts.")
    random_seeds: list[int] = Field(default=[0, 1, 2],
                                    description="Seeds of the random baseline (one subset each).")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        return check_choices(methods, tuple(SELECTORS))


@dg.asset(kinds={"parquet", "duckdb"}, group_name="selection",
          description="Subsets chosen by each selector and budget; Parquet + lineage JSON each. "
                      "Every config is registered in the catalog, so it also appears as a "
                      "partition of scored_subset.")
def scored_subsets(context: dg.AssetExecutionContext, config: SelectionConfig,
                   artifacts: ArtifactStore, catalog: CatalogResource, raw_pool: str,
                   target_set: str, model_inputs: dict, gradient_datastore: dict,
                   target_gradients: dict, warmup_proxy: str) -> dg.Output[list[dict]]:
    pool, target = load_pool(raw_pool), load_pool(target_set)
    selectors = [make_selector(m, seed=s) if takes_seed(m) else make_selector(m)
                 for m in config.methods
                 for s in (config.random_seeds if takes_seed(m) else [None])]
    inputs, checkpoints = inputs_from_artifacts(pool, model_inputs["pool"], gradient_datastore,
                                                target_gradients, warmup_proxy, target)
    records, started = [], time.perf_counter()
    for selector in selectors:
        for budget in config.budgets:
            saved = select_and_save(selector, budget, inputs, pool=pool, target=target,
                                    proxy_checkpoints=checkpoints, catalog=catalog.catalog(),
                                    directory=artifacts.path("selections", "x").parent)
            catalog.catalog().register_config(saved.lineage["config"])
            context.log.info(f"{selector.name} budget={budget}: {len(saved.selection)} examples")
            records.append({"method": selector.name, "budget": budget,
                            "seed": getattr(selector, "seed", 0), "k": len(saved.selection),
                            "selection_id": saved.selection_id, "path": str(saved.path),
                            "config_hash": saved.lineage["config_hash"]})
    frame = pd.DataFrame(records)[["method", "budget", "seed", "k", "config_hash"]]
    return dg.Output(records, metadata={"subsets": md.table(frame), "count": len(records),
                                        "seconds": round(time.perf_counter() - started, 2)})
