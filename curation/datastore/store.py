"""The read side of a gradient datastore: its format, opening, verifying and reading.

A store is a directory: ``shard-NNNNN.npy`` files of shape (rows, checkpoints, dim), each with
a ``shard-NNNNN.sha256`` sidecar, ``ids.parquet`` (one id per row), and ``manifest.json``
(shape, dtype, projection, checkpoint hashes and learning rates, a sha256 per shard).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq

from curation.errors import CurationError
from curation.io import sha256_file

if TYPE_CHECKING:
    from curation.datastore.build import BuildReport
    from curation.pursuit import MappedRows

FORMAT_VERSION = 1
DTYPES = ("float16", "float32")
STATS_FILE = "build-stats.json"


@dataclass(frozen=True)
class GradientStore:
    """An opened datastore: shards are memory-mapped, nothing is loaded until asked."""

    directory: Path
    manifest: dict
    report: BuildReport | None = field(default=None, compare=False)

    @property
    def n(self) -> int:
        return self.manifest["n"]

    @property
    def checkpoints(self) -> int:
        return len(self.manifest["proxy_checkpoints"])

    @property
    def dim(self) -> int:
        return self.manifest["dim"]

    @property
    def store_id(self) -> str:
        return self.manifest["datastore_id"]

    @property
    def checkpoint_lrs(self) -> np.ndarray:
        return np.asarray(self.manifest["checkpoint_lrs"], dtype=np.float64)

    @property
    def nbytes(self) -> int:
        """Bytes of the shard files on disk."""
        return sum((self.directory / s["file"]).stat().st_size for s in self.manifest["shards"])

    @cached_property
    def ids(self) -> np.ndarray:
        table = pq.read_table(self.directory / "ids.parquet")
        return np.asarray(table.column("id").to_pylist(), dtype=object)

    def shard(self, index: int) -> np.ndarray:
        """Shard ``index`` as a read-only memmap of shape (rows, checkpoints, dim)."""
        return np.load(self.directory / self.manifest["shards"][index]["file"], mmap_mode="r")

    def shards(self) -> list[np.ndarray]:
        return [self.shard(i) for i in range(len(self.manifest["shards"]))]

    def atoms(self) -> list[MappedRows]:
        """The shards as pursuit atoms: one ``MappedRows`` per shard, whose rows are the
        flattened (checkpoints * dim) trajectories, mapped only while read."""
        # Imported here: curation.pursuit loads numba, which only pursuit needs.
        from curation.pursuit import MappedRows

        return [MappedRows(str(self.directory / shard["file"])) for shard in self.manifest["shards"]]

    @property
    def indexes(self) -> dict:
        """Search indexes built on this store, by backend (``curation.datastore.index``)."""
        return self.manifest.get("indexes", {})

    def mean(self) -> np.ndarray:
        """Mean trajectory over all rows, (checkpoints, dim) in float64, streamed by shard."""
        total = np.zeros((self.checkpoints, self.dim), dtype=np.float64)
        for shard in self.shards():
            total += shard.astype(np.float64).sum(axis=0)
        return total / max(self.n, 1)

    def last_build_stats(self) -> dict | None:
        """Timing of the last build call that computed shards here (not part of the manifest)."""
        path = self.directory / STATS_FILE
        return json.loads(path.read_text()) if path.exists() else None


def read_manifest(directory: str | Path) -> dict:
    """The manifest of the datastore in ``directory``, format checked."""
    path = Path(directory) / "manifest.json"
    if not path.exists():
        raise CurationError(f"datastore manifest not found: {path}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CurationError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise CurationError(f"{path}: unsupported datastore format {manifest.get('format')}")
    return manifest


def verify_datastore(directory: str | Path, checksums: bool = True) -> list[str]:
    """Problems of the store in ``directory``, one line per bad shard; empty if it is sound."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    problems = []
    for shard in manifest["shards"]:
        path = directory / shard["file"]
        if not path.exists():
            problems.append(f"datastore shard missing: {path}")
        elif checksums and sha256_file(path) != shard["sha256"]:
            problems.append(f"datastore shard corrupted (sha256 mismatch): {path}")
    if not (directory / "ids.parquet").exists():
        problems.append(f"datastore ids missing: {directory / 'ids.parquet'}")
    return problems


def open_datastore(directory: str | Path, verify: bool = True) -> GradientStore:
    """Open a datastore; a missing or corrupted shard is an error naming the shard."""
    directory = Path(directory)
    problems = verify_datastore(directory, checksums=verify)
    if problems:
        raise CurationError(problems[0] if len(problems) == 1 else
                            f"{problems[0]} (and {len(problems) - 1} more problems)")
    return GradientStore(directory, read_manifest(directory))
