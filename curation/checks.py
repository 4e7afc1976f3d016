"""Data invariants, one function each; the Dagster asset checks are thin wrappers.

- ``unique_ids``: a split or subset names every example once.
- ``budget_respected``: a subset holds no more examples than its budget allows, all from its pool.
- ``finite_gradients``: a gradient store holds no NaN or infinite value.
- ``datastore_matches_pool``: a store has one row per pool example, in pool order, and shards
  whose shapes agree with the manifest.
- ``lineage_complete``: a subset's lineage names everything that made it.

Each returns a ``CheckOutcome``: passed or not, one line saying why, and metadata to show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from curation.datastore import GradientStore
from curation.lineage import lineage_problems
from curation.selectors import SELECTORS, resolve_budget


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def unique_ids(ids: Sequence[str], what: str = "ids") -> CheckOutcome:
    counts = Counter(str(i) for i in ids)
    duplicates = sorted(i for i, c in counts.items() if c > 1)
    meta = {"rows": len(ids), "unique": len(counts), "duplicates": len(duplicates)}
    if duplicates:
        return CheckOutcome(False, f"{len(duplicates)} duplicate {what}, e.g. "
                                   f"{duplicates[:3]}", meta)
    return CheckOutcome(True, f"all {len(ids)} {what} are unique", meta)


def budget_respected(ids: Sequence[str], budget: float, pool_ids: Sequence[str]) -> CheckOutcome:
    """At most ``resolve_budget(budget, len(pool))`` examples, every one of them in the pool."""
    allowed = resolve_budget(budget, len(pool_ids))
    outside = sorted(set(map(str, ids)) - set(map(str, pool_ids)))
    meta = {"selected": len(ids), "allowed": allowed, "budget": float(budget),
            "not_in_pool": len(outside)}
    if len(ids) > allowed:
        return CheckOutcome(False, f"{len(ids)} examples selected, budget {budget} allows "
                                   f"{allowed}", meta)
    if outside:
        return CheckOutcome(False, f"{len(outside)} selected ids are not in the pool, e.g. "
                                   f"{outside[:3]}", meta)
    return CheckOutcome(True, f"{len(ids)} of {allowed} allowed examples, all from the pool", meta)


def finite_gradients(store: GradientStore) -> CheckOutcome:
    """Scan every shard (memory-mapped, one at a time) for non-finite values."""
    bad_rows, first_bad = 0, None
    start = 0
    for shard in store.shards():
        finite = np.isfinite(shard.reshape(len(shard), -1)).all(axis=1)
        if not finite.all():
            bad_rows += int((~finite).sum())
            if first_bad is None:
                first_bad = str(store.ids[start + int(np.argmin(finite))])
        start += len(shard)
    meta = {"rows": start, "non_finite_rows": bad_rows, "datastore_id": store.store_id}
    if bad_rows:
        return CheckOutcome(False, f"{bad_rows} rows of {store.directory} hold NaN or inf "
                                   f"(first: id {first_bad!r})", meta)
    return CheckOutcome(True, f"all {start} rows are finite", meta)


def datastore_matches_pool(store: GradientStore, pool_ids: Sequence[str]) -> CheckOutcome:
    """One row per pool example in pool order; shard shapes agree with the manifest."""
    pool_ids = [str(i) for i in pool_ids]
    problems = []
    if store.n != len(pool_ids):
        problems.append(f"store has {store.n} rows, pool has {len(pool_ids)}")
    store_ids = [str(i) for i in store.ids]
    if store_ids != pool_ids:
        mismatch = next((n for n, (a, b) in enumerate(zip(store_ids, pool_ids, strict=False))
                         if a != b), min(len(store_ids), len(pool_ids)))
        problems.append(f"ids differ from the pool's from row {mismatch}")
    rows = 0
    for index, shard in enumerate(store.shards()):
        if shard.ndim != 3 or shard.shape[1:] != (store.checkpoints, store.dim):
            problems.append(f"shard {index} has shape {shard.shape}, expected "
                            f"(rows, {store.checkpoints}, {store.dim})")
        rows += shard.shape[0]
    if rows != store.n:
        problems.append(f"shards hold {rows} rows, manifest says {store.n}")
    meta = {"store_rows": store.n, "pool_rows": len(pool_ids), "checkpoints": store.checkpoints,
            "dim": store.dim}
    if problems:
        return CheckOutcome(False, "; ".join(problems), meta)
    return CheckOutcome(True, f"{store.n} rows x {store.checkpoints} checkpoints x {store.dim} "
                              "dims, in pool order", meta)


def lineage_complete(lineage: dict) -> CheckOutcome:
    selector = SELECTORS.get(lineage.get("selector"))
    problems = lineage_problems(lineage, needs=selector.needs if selector else ())
    if selector is None and "selector" in lineage:
        problems.append(f"unknown selector {lineage['selector']!r}")
    meta = {"config_hash": str(lineage.get("config_hash")), "problems": len(problems)}
    if problems:
        return CheckOutcome(False, "lineage incomplete: " + "; ".join(problems), meta)
    return CheckOutcome(True, "lineage names config, pool, datastore, checkpoints and code", meta)
