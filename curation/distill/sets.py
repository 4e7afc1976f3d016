"""A distilled set as stored: rows, Parquet round trip, the rows chosen, storage, image grid.

A distilled set is itself a pool in the data contract (``id``, ``features``, ``label``) plus
``soft_label`` (float16) and ``source_id`` (the pool example a row is, or was initialized
from); its build record is the Parquet schema metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import CurationError
from curation.io import atomic_path, write_parquet
from curation.selection import read_selection
from curation.training import numpy_rng

_METADATA_KEY = b"curation.distill"


@dataclass(frozen=True)
class DistilledSet:
    """Distilled rows: inputs, class, float16 soft labels, and where each row came from."""

    ids: np.ndarray
    source_ids: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    soft_labels: np.ndarray
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def training_targets(self) -> np.ndarray:
        """Stored soft labels as float32 rows summing to one (float16 rounding undone)."""
        q = self.soft_labels.astype(np.float32)
        return q / q.sum(axis=1, keepdims=True)

    def to_table(self) -> pa.Table:
        n_classes = self.soft_labels.shape[1]
        soft = pa.FixedSizeListArray.from_arrays(
            pa.array(self.soft_labels.reshape(-1), pa.float16()), n_classes)
        features = pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(self.inputs, np.float32).reshape(-1)),
            self.inputs.shape[1])
        table = pa.table({
            "id": pa.array(list(self.ids), pa.string()),
            "features": features,
            "label": pa.array(self.labels, pa.int64()),
            "soft_label": soft,
            "source_id": pa.array(list(self.source_ids), pa.string()),
        })
        return table.replace_schema_metadata({_METADATA_KEY: json.dumps(self.info, sort_keys=True)})


def write_distilled(path: str | Path, distilled: DistilledSet) -> Path:
    return write_parquet(path, distilled.to_table())


def read_distilled(path: str | Path) -> DistilledSet:
    """Open a distilled set written by ``write_distilled``."""
    path = Path(path)
    if not path.exists():
        raise CurationError(f"distilled set not found: {path}")
    table = pq.read_table(path)
    missing = [c for c in ("id", "features", "label", "soft_label", "source_id")
               if c not in table.column_names]
    if missing:
        raise CurationError(f"{path}: not a distilled set, missing columns {missing}")

    def matrix(name: str, dtype) -> np.ndarray:
        column = table.column(name).combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False).astype(dtype)
        return values.reshape(table.num_rows, -1)

    metadata = (table.schema.metadata or {}).get(_METADATA_KEY)
    return DistilledSet(
        np.asarray(table.column("id").to_pylist(), dtype=object),
        np.asarray(table.column("source_id").to_pylist(), dtype=object),
        matrix("features", np.float32), table.column("label").to_numpy().astype(np.int64),
        matrix("soft_label", np.float16), json.loads(metadata) if metadata else {})


def choose_rows(labels: np.ndarray, per_class: int, *, ranked: np.ndarray | None = None,
                seed: int = 0) -> np.ndarray:
    """``per_class`` pool rows of every class present in ``labels``, class by class.

    Without ``ranked`` the rows are drawn at random (seeded); with it (pool rows in rank order,
    e.g. a selection) the first ``per_class`` members of each class are taken.
    """
    if per_class < 1:
        raise CurationError(f"'per_class' must be at least 1 example per class, got {per_class}")
    rng = numpy_rng(seed)
    chosen = []
    for c in np.unique(labels):
        if ranked is None:
            members = np.flatnonzero(labels == c)
            if len(members) < per_class:
                raise CurationError(f"class {c} has only {len(members)} examples in the pool, "
                                    f"fewer than per_class={per_class}")
            chosen.append(np.sort(rng.choice(members, per_class, replace=False)))
        else:
            members = ranked[labels[ranked] == c]
            if len(members) < per_class:
                raise CurationError(f"the selection has only {len(members)} examples of class {c}, "
                                    f"fewer than per_class={per_class}; use a larger selection")
            chosen.append(members[:per_class])
    return np.concatenate(chosen)


def read_ranking(path: str | Path, pool_ids: np.ndarray) -> np.ndarray:
    """Pool rows of a selection Parquet (column ``id``), ordered by ``rank`` if present."""
    return read_selection(path, pool_ids, by_rank=True)[0]


def storage_cost(path: str | Path) -> dict:
    """Bytes of the label and input columns of a distilled Parquet file: on disk (encoded and
    compressed) and raw (rows x width x value size, e.g. float16 labels, float32 inputs)."""
    parquet = pq.ParquetFile(path)
    metadata, schema = parquet.metadata, parquet.schema_arrow
    on_disk: dict[str, int] = {}
    for g in range(metadata.num_row_groups):
        for c in range(metadata.num_columns):
            column = metadata.row_group(g).column(c)
            top = column.path_in_schema.split(".")[0]
            on_disk[top] = on_disk.get(top, 0) + column.total_compressed_size

    def raw(name: str) -> int:
        kind = schema.field(name).type
        return metadata.num_rows * kind.list_size * kind.value_type.bit_width // 8

    return {"label_bytes": on_disk["soft_label"], "input_bytes": on_disk["features"],
            "label_to_input": on_disk["soft_label"] / max(on_disk["features"], 1),
            "label_bytes_raw": raw("soft_label"), "input_bytes_raw": raw("features"),
            "label_to_input_raw": raw("soft_label") / raw("features"),
            "file_bytes": Path(path).stat().st_size}


def save_image_grid(path: str | Path, inputs: np.ndarray, labels: np.ndarray,
                    shape: tuple[int, ...], max_per_class: int = 10) -> Path:
    """A PNG grid of the inputs as images of ``shape`` ((height, width) or (channels, height,
    width)): one row per class, up to ``max_per_class`` columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = np.unique(labels)
    columns = min(max_per_class, max(int((labels == c).sum()) for c in classes))
    fig, axes = plt.subplots(len(classes), columns, squeeze=False,
                             figsize=(0.6 * columns + 0.4, 0.6 * len(classes)))
    for ax in axes.ravel():
        ax.axis("off")
    for r, c in enumerate(classes):
        for col, row in enumerate(np.flatnonzero(labels == c)[:columns]):
            # Each image on its own scale: learned inputs leave the pixel range.
            axes[r, col].imshow(_displayable(inputs[row], shape), cmap="gray")
        axes[r, 0].text(-0.1, 0.5, str(c), transform=axes[r, 0].transAxes, ha="right",
                        va="center", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return Path(path)




def _displayable(row: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One row as an image: (height, width) grey, or (height, width, 3) scaled into [0, 1]."""
    image = row.reshape(shape)
    if image.ndim == 2 or image.shape[0] == 1:
        return image.reshape(image.shape[-2:])
    image = np.moveaxis(image[:3], 0, -1)
    return (image - image.min()) / max(float(image.max() - image.min()), 1e-12)
