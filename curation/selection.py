"""Running a selector with its lineage, and saving the result as a Selection.

``select_with_lineage`` hands the selector inputs that note what it reads, so the lineage
names exactly the gradient stores and proxy checkpoints behind the subset (a LESS run names
its Adam-aware store, a random run names none). ``save_selection`` writes the Parquet +
lineage JSON pair and, given a catalog, records it there. ``selector_from_config`` turns a
stored config (``{"selector": ..., "budget": ..., **params}``) back into a selector.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.datastore import GradientStore, open_datastore
from curation.errors import CurationError
from curation.io import write_json, write_parquet
from curation.lineage import selection_id, selection_lineage
from curation.pool import Pool
from curation.proxies import kind_of, load_trained_proxy
from curation.selectors import Selection, SelectionInputs, Selector, make_selector


@dataclass(frozen=True)
class SavedSelection:
    selection: Selection
    lineage: dict
    selection_id: str
    path: Path


def selector_from_config(config: dict) -> tuple[Selector, float]:
    """The selector and budget described by a stored selector config."""
    missing = [key for key in ("selector", "budget") if key not in config]
    if missing:
        raise CurationError(f"selector config {config} is missing {missing}")
    params = {k: v for k, v in config.items() if k not in ("selector", "budget")}
    return make_selector(config["selector"], **params), float(config["budget"])


def read_selection(path: str | Path, pool_ids: Sequence[str], *, by_rank: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The pool rows of a selection Parquet (column ``id``) and their weights (column ``weight``,
    else ones), in file order or, with ``by_rank``, ordered by its ``rank`` column if present.

    Every reader of a selection file goes through here, so every check of one lives here: the
    file is Parquet with a string ``id`` column, ids are unique and in the pool, weights are
    finite and non-negative; anything else fails in one line naming the file."""
    path = Path(path)
    table = _selection_table(path)
    ids = table.column("id").to_pylist()
    weights = _selection_weights(table, path)
    if by_rank and "rank" in table.column_names:
        ranks = table.column("rank")
        if not pa.types.is_integer(ranks.type) or ranks.null_count:
            raise CurationError(f"{path}: column 'rank' must be integers without nulls, "
                                f"got {ranks.type}")
        order = np.argsort(ranks.to_numpy(), kind="stable")
        ids, weights = [ids[i] for i in order], weights[order]
    position = {str(i): n for n, i in enumerate(pool_ids)}
    missing = [i for i in ids if i not in position]
    if missing:
        raise CurationError(f"{path}: {len(missing)} ids are not in the pool, e.g. {missing[0]!r}")
    return np.array([position[i] for i in ids], dtype=np.int64), weights


def _selection_table(path: Path) -> pa.Table:
    """The selection file as a table with a unique, non-null string ``id`` column."""
    if not path.exists():
        raise CurationError(f"selection file not found: {path}")
    if path.is_dir():
        raise CurationError(f"selection file {path} is a directory; expected a Parquet file")
    try:
        table = pq.read_table(path)
    except pa.ArrowException:
        raise CurationError(f"selection file {path} is not a Parquet file; expected Parquet with "
                            "a string column 'id' (and optional 'weight', 'score', 'rank')") from None
    except OSError as exc:
        raise CurationError(f"selection file {path} could not be read: {exc.strerror}") from None
    if "id" not in table.column_names:
        raise CurationError(f"{path}: missing required column 'id'")
    column = table.column("id")
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise CurationError(f"{path}: column 'id' must be strings, got {column.type}")
    if column.null_count:
        raise CurationError(f"{path}: column 'id' has {column.null_count} null values")
    if table.num_rows == 0:
        raise CurationError(f"{path}: the selection has no rows")
    counts = pc.value_counts(column)
    dupes = [v["values"] for v in counts.to_pylist() if v["counts"] > 1]
    if dupes:
        raise CurationError(f"{path}: column 'id' has {len(dupes)} duplicate values, "
                            f"e.g. {dupes[0]!r}")
    return table


def _selection_weights(table: pa.Table, path: Path) -> np.ndarray:
    if "weight" not in table.column_names:
        return np.ones(table.num_rows)
    column = table.column("weight")
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise CurationError(f"{path}: column 'weight' must be numbers, got {column.type}")
    weights = column.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise CurationError(f"{path}: column 'weight' must be finite and non-negative; "
                            f"{int(bad.sum())} rows are not (first: row {row}, {weights[row]})")
    return weights


def selection_config(selector: Selector, budget: float) -> dict:
    """The config whose canonical hash keys a subset: selector parameters plus budget."""
    return {**selector.config(), "budget": budget}


def inputs_from_artifacts(pool: Pool, pool_inputs: str | Path, pool_stores: dict[str, str],
                          target_stores: dict[str, str], proxy_dir: str | Path,
                          target: Pool | None = None) -> tuple[SelectionInputs, list[str]]:
    """Selector inputs over stored artifacts, and the proxy's checkpoint hashes (class labels
    of pool and ``target`` where both have them).

    ``pool_stores`` / ``target_stores`` map a feature kind to a datastore directory; a kind
    that is not there fails naming the config field that adds it.
    """
    proxy = load_trained_proxy(proxy_dir)

    def store(paths: dict[str, str], split: str, kind: str) -> GradientStore:
        if kind not in paths:
            raise CurationError(
                f"no {kind!r} gradient store for the {split}: add {kind!r} to the "
                "gradient_datastore config 'kinds'")
        return open_datastore(paths[kind])

    pool_x = functools.cache(lambda: np.load(pool_inputs))  # read once for both users
    predictions = functools.cache(
        lambda: (kind_of(proxy).predictions(proxy, pool_x()), pool.labels))
    inputs = SelectionInputs(pool.ids, functools.partial(store, pool_stores, "pool"),
                             functools.partial(store, target_stores, "target set"), predictions,
                             split_labels(pool, target), pool_x)
    return inputs, [c.sha256 for c in proxy.checkpoints]


def split_labels(pool: Pool, target: Pool | None
                 ) -> Callable[[], tuple[np.ndarray, np.ndarray]] | None:
    """``SelectionInputs.split_labels`` for a pool and target, None unless both are labelled."""
    if target is None or not (pool.has_labels and target.has_labels):
        return None
    return lambda: (pool.labels, target.labels)


def select_with_lineage(selector: Selector, inputs: SelectionInputs, budget: float, *,
                        pool_id: str, target_id: str | None = None,
                        proxy_checkpoints: Sequence[str] = ()) -> tuple[Selection, dict]:
    """Run ``selector`` and return the selection with a lineage of what it actually read."""
    pool_used: dict[str, GradientStore] = {}
    target_used: dict[str, GradientStore] = {}
    proxy_used: list[bool] = []

    def pool_store(kind: str) -> GradientStore:
        pool_used[kind] = inputs.pool_store(kind)
        return pool_used[kind]

    def target_store(kind: str) -> GradientStore:
        target_used[kind] = inputs.target_store(kind)
        return target_used[kind]

    def predictions() -> tuple[np.ndarray, np.ndarray]:
        proxy_used.append(True)
        return inputs.proxy_outputs()

    tracked = SelectionInputs(
        inputs.ids, pool_store if inputs.pool_gradients else None,
        target_store if inputs.target_gradients else None,
        predictions if inputs.proxy_predictions else None, inputs.split_labels,
        inputs.pool_features)
    selection = selector.select(tracked, budget)
    stores = [*pool_used.values(), *target_used.values()]
    checkpoint_sets = {tuple(s.manifest["proxy_checkpoints"]) for s in stores}
    if len(checkpoint_sets) > 1:
        raise CurationError("the gradient stores read by the selector come from different "
                            "proxy checkpoints; rebuild them from one warm-up")
    if checkpoint_sets:
        checkpoints = list(checkpoint_sets.pop())
    else:
        checkpoints = list(proxy_checkpoints) if proxy_used else []
    lineage = selection_lineage(
        selector.config(), budget=budget, k=len(selection), pool_id=pool_id,
        datastore_id=next(iter(pool_used.values())).store_id if pool_used else None,
        proxy_checkpoints=checkpoints, target_id=target_id, n_pool=len(inputs.ids))
    lineage["datastores"] = {kind: s.store_id for kind, s in pool_used.items()}
    lineage["target_datastores"] = {kind: s.store_id for kind, s in target_used.items()}
    lineage["selection_info"] = selection.info
    return selection, lineage


def save_selection(selection: Selection, lineage: dict, directory: str | Path,
                   catalog=None) -> SavedSelection:
    """Write ``<selection_id>.parquet`` + ``.lineage.json`` (atomically), then record them
    in ``catalog`` (a ``curation.catalog.Catalog``) if one is given."""
    sid = selection_id(lineage)
    path = Path(directory) / f"{sid}.parquet"
    write_json(path.with_suffix(".lineage.json"), lineage)
    write_parquet(path, selection.to_table())
    if catalog is not None:
        catalog.record_selection(selection, lineage, path=path)
    return SavedSelection(selection, lineage, sid, path)


def select_and_save(selector: Selector, budget: float, inputs: SelectionInputs, *, pool: Pool,
                    target: Pool | None, proxy_checkpoints: Sequence[str],
                    directory: str | Path, catalog=None) -> SavedSelection:
    """``select_with_lineage`` then ``save_selection``: one subset, on disk and in the catalog."""
    selection, lineage = select_with_lineage(
        selector, inputs, budget, pool_id=pool.content_hash,
        target_id=target.content_hash if target is not None else None,
        proxy_checkpoints=proxy_checkpoints)
    return save_selection(selection, lineage, directory, catalog)
