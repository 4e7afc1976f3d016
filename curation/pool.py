"""Pools, target sets and test splits in the data contract, validated before any work starts.

Contract: ``id`` (unique, non-null string), optional ``label`` (a class index
``0..MAX_CLASSES-1``), and exactly one input column, ``features`` (fixed-length list of finite
numbers) or ``text`` (string, not empty in every row); an instruction-style pool may have
``prompt`` and ``response`` (strings) instead of ``text``. Other columns (``domain``,
``source``, ...) are carried along untouched. A target or test split must also match its pool
(``check_against_pool``): the same kind of input, the same feature width, no label the pool
never has.

Sources: a Parquet file, a Hugging Face ``datasets`` ``save_to_disk`` directory of one split,
or a local ``.json`` (an array of objects, or one object per line), ``.jsonl`` or ``.csv`` file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from curation.errors import CurationError

INPUT_COLUMNS = ("features", "text")
# Instruction-style pools: no ``text`` column but ``prompt`` and ``response`` (both strings).
PROMPT_RESPONSE = "prompt+response"
_TEXT_FORMATS = (".json", ".jsonl", ".csv")
# Labels are class indices: a model gets one output per class up to the largest label, so a
# stray id-like label (10**12) would try to allocate terabytes. Remap such labels to 0..k-1.
MAX_CLASSES = 10_000


@dataclass(frozen=True)
class Pool:
    """A validated split: an Arrow table in the data contract plus where it came from."""

    table: pa.Table
    source: str
    input_column: str

    def __len__(self) -> int:
        return self.table.num_rows

    @cached_property
    def ids(self) -> np.ndarray:
        return np.asarray(self.table.column("id").to_pylist(), dtype=object)

    @property
    def has_labels(self) -> bool:
        return "label" in self.table.column_names

    @cached_property
    def labels(self) -> np.ndarray:
        if not self.has_labels:
            raise CurationError(f"{self.source}: column 'label' is required here but missing")
        return self.table.column("label").to_numpy().astype(np.int64)

    @cached_property
    def features(self) -> np.ndarray:
        """The ``features`` column as a contiguous (n, d) float32 array."""
        if self.input_column != "features":
            raise CurationError(f"{self.source}: has no 'features' column (input is text)")
        return _features_matrix(self.table.column("features"))

    @cached_property
    def texts(self) -> list[str]:
        """The ``text`` column, or each prompt and its response joined by a newline."""
        if self.input_column == PROMPT_RESPONSE:
            prompts, responses = (self.table.column(c).to_pylist() for c in ("prompt", "response"))
            return [f"{p}\n{r}" for p, r in zip(prompts, responses, strict=True)]
        if self.input_column != "text":
            raise CurationError(f"{self.source}: has no 'text' column (input is features)")
        return self.table.column("text").to_pylist()

    @cached_property
    def content_hash(self) -> str:
        """sha256 over ids, labels and inputs: the pool's identity in lineage records."""
        h = hashlib.sha256()
        h.update("\0".join(self.ids).encode())
        if self.has_labels:
            h.update(self.labels.tobytes())
        if self.input_column == "features":
            h.update(self.features.tobytes())
        else:
            h.update("\0".join(self.texts).encode())
        return h.hexdigest()

    def take(self, indices: np.ndarray) -> Pool:
        return Pool(self.table.take(pa.array(indices)), self.source, self.input_column)


def n_classes_of(*pools: Pool) -> int:
    """Classes of the labelled ``pools`` together: the largest label plus one."""
    return int(max(p.labels.max() for p in pools if p.has_labels)) + 1


def load_pool(path: str | Path, *, require_label: bool = True, role: str = "pool",
              pool: Pool | None = None) -> Pool:
    """Load and validate a split; raise ``CurationError`` naming the file and problem.

    With ``pool`` (for a target or test split) the split must also match it:
    ``check_against_pool``."""
    path = Path(path)
    if not path.exists():
        raise CurationError(f"{role} file not found: {path}")
    table = _read_table(path, role)
    split = validate_table(table, source=str(path), require_label=require_label)
    if pool is not None:
        check_against_pool(split, pool, role)
    return split


def check_against_pool(split: Pool, pool: Pool, role: str) -> None:
    """A target or test split fits ``pool``: same kind of input, same feature width, and only
    labels the pool has (a class no pool example has can never be learned from a subset)."""
    if (split.input_column == "features") != (pool.input_column == "features"):
        raise CurationError(f"{split.source}: the {role} input is {split.input_column!r} but the "
                            f"pool's ({pool.source}) is {pool.input_column!r}")
    if split.input_column == "features" and split.features.shape[1] != pool.features.shape[1]:
        raise CurationError(
            f"{split.source}: {role} features have width {split.features.shape[1]} but the "
            f"pool's ({pool.source}) have width {pool.features.shape[1]}")
    if split.has_labels and pool.has_labels:
        unseen = np.setdiff1d(split.labels, pool.labels)
        if len(unseen):
            shown = ", ".join(map(str, unseen[:10])) + (", ..." if len(unseen) > 10 else "")
            raise CurationError(f"{split.source}: {len(unseen)} {role} label(s) never occur in "
                                f"the pool ({pool.source}): {shown}")


def validate_table(table: pa.Table, *, source: str, require_label: bool = True) -> Pool:
    """Check ``table`` against the data contract and return it as a ``Pool``."""
    names = table.column_names
    if table.num_rows == 0:
        raise CurationError(f"{source}: has no rows")
    if "id" not in names:
        raise CurationError(f"{source}: missing required column 'id' (columns: {names})")
    inputs = [c for c in INPUT_COLUMNS if c in names]
    if not inputs and "prompt" in names and "response" in names:
        inputs = [PROMPT_RESPONSE]
    if len(inputs) != 1:
        raise CurationError(
            f"{source}: expected exactly one input column, 'features' or 'text' (or 'prompt' "
            f"and 'response'); found {inputs}"
        )
    _check_ids(table.column("id"), source)
    if "label" in names:
        _check_labels(table.column("label"), source)
    elif require_label:
        raise CurationError(f"{source}: missing required column 'label' (columns: {names})")
    if "choices" in names:
        _check_choices(table, source)
    if inputs[0] == "features":
        _features_matrix(table.column("features"), source)
    elif inputs[0] == PROMPT_RESPONSE:
        _check_texts(table.column("prompt"), source, "prompt")
        _check_texts(table.column("response"), source, "response")
    else:
        _check_texts(table.column("text"), source)
    return Pool(table, source, inputs[0])


def _read_table(path: Path, role: str) -> pa.Table:
    if not (path.is_dir() or path.suffix in (".parquet", *_TEXT_FORMATS)):
        raise CurationError(
            f"{role} file {path}: unsupported format; expected .parquet, .json, .jsonl, .csv "
            "or a datasets save_to_disk directory")
    try:
        if path.is_dir():
            return _read_datasets_directory(path, role)
        if path.suffix == ".parquet":
            return pq.read_table(path)
        return _read_text_file(path)
    except CurationError:
        raise
    except Exception as exc:  # any reader failure becomes one line naming the file
        message = " ".join(str(exc).split())  # one line, whatever the reader printed
        raise CurationError(f"{role} file {path} could not be read: {message}") from exc


def _read_datasets_directory(path: Path, role: str) -> pa.Table:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        raise CurationError(
            f"{role} file {path} is a datasets DatasetDict with splits {splits}; give one split's "
            f"directory instead, e.g. {path / splits[0]}")
    return loaded.data.table


def _read_text_file(path: Path) -> pa.Table:
    """JSON / JSON Lines / CSV read by Arrow itself: ``datasets.load_dataset`` would write an
    Arrow cache under ``~/.cache/huggingface`` on every read, outside the project's home."""
    if path.suffix == ".csv":
        # ids are strings by contract even when they look like numbers.
        options = pa_csv.ConvertOptions(column_types={"id": pa.string()})
        return pa_csv.read_csv(path, convert_options=options)
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"["):  # one JSON array of records rather than one record per line
        records = json.loads(path.read_text())
        if not all(isinstance(r, dict) for r in records):
            raise CurationError(f"{path}: a JSON array must hold one object per example")
        return pa.Table.from_pylist(records)
    return pa_json.read_json(path)


def _check_ids(column: pa.ChunkedArray, source: str) -> None:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise CurationError(f"{source}: column 'id' must be strings, got {column.type}")
    if column.null_count:
        raise CurationError(f"{source}: column 'id' has {column.null_count} null values")
    counts = pc.value_counts(column)
    dupes = [v["values"] for v in counts.to_pylist() if v["counts"] > 1]
    if dupes:
        raise CurationError(
            f"{source}: column 'id' has {len(dupes)} duplicate values, e.g. {dupes[0]!r}"
        )


def _check_labels(column: pa.ChunkedArray, source: str) -> None:
    if not pa.types.is_integer(column.type):
        raise CurationError(f"{source}: column 'label' must be integers, got {column.type}")
    if column.null_count:
        raise CurationError(f"{source}: column 'label' has {column.null_count} null values")
    if pc.min(column).as_py() < 0:
        raise CurationError(f"{source}: column 'label' has negative values")
    largest = pc.max(column).as_py()
    if largest >= MAX_CLASSES:
        raise CurationError(
            f"{source}: column 'label' must be class indices 0..{MAX_CLASSES - 1}, found "
            f"{largest}; remap the labels to 0..k-1")


def _check_choices(table: pa.Table, source: str) -> None:
    """LM test splits: ``choices`` (lists of strings) need ``label``, the gold choice's index."""
    column = table.column("choices")
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) or \
            not pa.types.is_string(column.type.value_type):
        raise CurationError(f"{source}: column 'choices' must be lists of strings, got "
                            f"{column.type}")
    if "label" not in table.column_names:
        raise CurationError(f"{source}: column 'choices' needs a column 'label' (the index of "
                            "the gold choice)")
    sizes = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    outside = np.flatnonzero(table.column("label").to_numpy() >= sizes)
    if len(outside):
        raise CurationError(f"{source}: column 'label' is outside its 'choices' in row "
                            f"{int(outside[0])} (label must be 0..len(choices)-1)")


def _check_texts(column: pa.ChunkedArray, source: str, name: str = "text") -> None:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise CurationError(f"{source}: column {name!r} must be strings, got {column.type}")
    if column.null_count:
        raise CurationError(f"{source}: column {name!r} has {column.null_count} null values")
    if not pc.any(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0)).as_py():
        raise CurationError(f"{source}: column {name!r} is empty in every row; expected text")


def _features_matrix(column: pa.ChunkedArray, source: str = "pool") -> np.ndarray:
    if not (pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type)
            or pa.types.is_large_list(column.type)):
        raise CurationError(f"{source}: column 'features' must be a list of floats, got {column.type}")
    if column.null_count:
        raise CurationError(f"{source}: column 'features' has {column.null_count} null rows")
    lengths = np.unique(pc.list_value_length(column).to_numpy())
    if len(lengths) != 1 or lengths[0] == 0:
        raise CurationError(
            f"{source}: column 'features' must have one fixed, non-zero length; found {lengths.tolist()}"
        )
    values = pc.list_flatten(column)
    kind = values.type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
        raise CurationError(f"{source}: column 'features' must hold numbers (list<float32>), "
                            f"got {column.type}")
    if values.null_count:
        raise CurationError(f"{source}: column 'features' has null values inside lists")
    matrix = np.ascontiguousarray(
        values.to_numpy().astype(np.float32, copy=False).reshape(len(column), int(lengths[0]))
    )
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise CurationError(
            f"{source}: column 'features' has NaN or infinite values in {int(bad.sum())} rows "
            f"(first: row {row})"
        )
    return matrix


def features_table(ids, features: np.ndarray, labels=None, **extra) -> pa.Table:
    """Build a contract table with a fixed-length ``features`` column."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    columns = {
        "id": pa.array([str(i) for i in ids], pa.string()),
        "features": pa.FixedSizeListArray.from_arrays(
            pa.array(features.reshape(-1)), features.shape[1]
        ),
    }
    if labels is not None:
        columns["label"] = pa.array(np.asarray(labels, dtype=np.int64))
    columns.update({k: pa.array(v) for k, v in extra.items()})
    return pa.table(columns)
