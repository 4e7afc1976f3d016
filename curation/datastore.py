"""Sharded on-disk gradient datastore.

Each example's *trajectory* is its projected gradient feature at every proxy checkpoint:
an array of shape (checkpoints, dim). Rows are written in shards of ``shard_size`` examples
as ``shard-NNNNN.npy`` (float16 by default), each via a temp file and a rename, and a
``manifest.json`` records shape, dtype, projection, checkpoint hashes and a sha256 per shard.
Shards already on disk are kept, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from curation.errors import CurationError
from curation.gradients import (
    FEATURE_KINDS,
    GaussianProjector,
    adam_features,
    per_example_gradients,
)
from curation.io import sha256_file, write_json, write_npy, write_parquet
from curation.proxy import Proxy, parameter_names

FORMAT_VERSION = 1
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class DatastoreSpec:
    """How gradient features are computed and stored."""

    kind: str = "sgd"
    dim: int = 1024
    seed: int = 0
    dtype: str = "float16"
    shard_size: int = 8192
    batch_size: int = 256
    params: str = "all"
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise CurationError(f"datastore 'kind' must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.dtype not in DTYPES:
            raise CurationError(f"datastore 'dtype' must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("dim", "shard_size", "batch_size"):
            if getattr(self, name) <= 0:
                raise CurationError(f"datastore {name!r} must be positive")


@dataclass(frozen=True)
class GradientStore:
    """An opened datastore: shards are memory-mapped, nothing is loaded until asked."""

    directory: Path
    manifest: dict

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

    @cached_property
    def ids(self) -> np.ndarray:
        table = pq.read_table(self.directory / "ids.parquet")
        return np.asarray(table.column("id").to_pylist(), dtype=object)

    def shard(self, index: int) -> np.ndarray:
        """Shard ``index`` as a read-only memmap of shape (rows, checkpoints, dim)."""
        return np.load(self.directory / self.manifest["shards"][index]["file"], mmap_mode="r")

    def shards(self) -> list[np.ndarray]:
        return [self.shard(i) for i in range(len(self.manifest["shards"]))]

    def trajectories(self, checkpoint_weights: Sequence[float] | None = None,
                     dtype: str = "float32") -> np.ndarray:
        """All rows as one (n, checkpoints * dim) array, each checkpoint block scaled."""
        weights = np.ones(self.checkpoints) if checkpoint_weights is None else np.asarray(
            checkpoint_weights, dtype=np.float64)
        if weights.shape != (self.checkpoints,):
            raise CurationError(
                f"checkpoint_weights needs {self.checkpoints} values, got {weights.shape[0]}"
            )
        out = np.empty((self.n, self.checkpoints * self.dim), dtype=dtype)
        start = 0
        for shard in self.shards():
            block = shard.astype(np.float32) * weights[None, :, None].astype(np.float32)
            out[start:start + len(shard)] = block.reshape(len(shard), -1)
            start += len(shard)
        return out


def open_datastore(directory: str | Path, verify: bool = True) -> GradientStore:
    """Open a datastore; a missing or corrupted shard is an error naming the shard."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        raise CurationError(f"datastore manifest not found: {manifest_path}")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise CurationError(f"{manifest_path}: unsupported datastore format {manifest.get('format')}")
    for shard in manifest["shards"]:
        path = directory / shard["file"]
        if not path.exists():
            raise CurationError(f"datastore shard missing: {path}")
        if verify and sha256_file(path) != shard["sha256"]:
            raise CurationError(f"datastore shard corrupted (sha256 mismatch): {path}")
    return GradientStore(directory, manifest)


def build_datastore(proxy: Proxy, inputs: np.ndarray, labels: np.ndarray, ids: Sequence[str],
                    out_dir: str | Path, spec: DatastoreSpec = DatastoreSpec(),
                    pool_id: str = "", progress: bool = False) -> GradientStore:
    """Compute projected gradient trajectories of every example; resume from existing shards."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(inputs) != len(labels) or len(inputs) != len(ids):
        raise CurationError("datastore inputs, labels and ids must have the same length")
    build = {"spec": asdict(spec), "n": len(inputs), "pool_id": pool_id,
             "proxy_checkpoints": [c.sha256 for c in proxy.checkpoints]}
    _claim_directory(out_dir, build)
    computer = _FeatureComputer(proxy, spec)
    bounds = [(s, min(s + spec.shard_size, len(inputs)))
              for s in range(0, len(inputs), spec.shard_size)]
    shards = []
    for index, (start, stop) in enumerate(tqdm(bounds, desc="gradient shards",
                                               disable=not progress)):
        path = out_dir / f"shard-{index:05d}.npy"
        expected = (stop - start, len(proxy.checkpoints), spec.dim)
        if not _complete_shard(path, expected, spec.dtype):
            write_npy(path, computer(inputs[start:stop], labels[start:stop]).astype(spec.dtype))
        shards.append({"file": path.name, "rows": [start, stop], "sha256": sha256_file(path)})
    write_parquet(out_dir / "ids.parquet", pa.table({"id": pa.array(list(ids), pa.string())}))
    manifest = {
        "format": FORMAT_VERSION, "n": len(inputs), "dim": spec.dim, "dtype": spec.dtype,
        "feature_kind": spec.kind, "params": spec.params, "normalize": spec.normalize,
        "n_params": computer.n_params, "shard_size": spec.shard_size,
        "projection": computer.projector.describe(), "pool_id": pool_id,
        "proxy_checkpoints": [c.sha256 for c in proxy.checkpoints],
        "checkpoint_lrs": [c.lr for c in proxy.checkpoints],
        "shape": [len(inputs), len(proxy.checkpoints), spec.dim], "shards": shards,
    }
    manifest["datastore_id"] = hashlib.sha256(
        json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    write_json(out_dir / "manifest.json", manifest)
    return GradientStore(out_dir, manifest)


class _FeatureComputer:
    """Projected features of a batch of examples at every checkpoint of a proxy."""

    def __init__(self, proxy: Proxy, spec: DatastoreSpec) -> None:
        self.spec = spec
        self.models = [proxy.load_model(c) for c in proxy.checkpoints]
        self.names = parameter_names(self.models[0], spec.params)
        params = dict(self.models[0].named_parameters())
        self.n_params = int(sum(params[n].numel() for n in self.names))
        self.projector = GaussianProjector(self.n_params, spec.dim, seed=spec.seed)
        self.moments = []
        if spec.kind == "adam":
            for ckpt in proxy.checkpoints:
                state = proxy.load_moments(ckpt)
                self.moments.append(tuple(
                    torch.cat([state[f"{key}.{n}"].reshape(-1) for n in self.names])
                    for key in ("exp_avg", "exp_avg_sq")))
        self.betas, self.eps = proxy.betas, proxy.eps

    def __call__(self, inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = np.empty((len(inputs), len(self.models), self.spec.dim), dtype=np.float32)
        x_all = torch.from_numpy(np.array(inputs, dtype=np.float32))
        y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        for start in range(0, len(inputs), self.spec.batch_size):
            x = x_all[start:start + self.spec.batch_size]
            y = y_all[start:start + self.spec.batch_size]
            for c, model in enumerate(self.models):
                feats = per_example_gradients(model, self.names, x, y)
                if self.moments:
                    feats = adam_features(feats, *self.moments[c], self.betas, self.eps)
                projected = self.projector(feats)
                if self.spec.normalize:
                    projected = torch.nn.functional.normalize(projected, dim=1)
                out[start:start + len(x), c] = projected.numpy()
        if not np.isfinite(out).all():
            raise CurationError("non-finite gradient features: check the proxy checkpoints")
        return out


def _claim_directory(out_dir: Path, build: dict) -> None:
    """Record what this directory holds; refuse to mix shards of a different build."""
    path = out_dir / "build.json"
    if path.exists():
        if json.loads(path.read_text()) != json.loads(json.dumps(build)):
            raise CurationError(
                f"{out_dir} holds a datastore built with a different config or pool; "
                "use another directory"
            )
        return
    write_json(path, build)


def _complete_shard(path: Path, shape: tuple[int, ...], dtype: str) -> bool:
    if not path.exists():
        return False
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return False
    return array.shape == shape and array.dtype == np.dtype(dtype)
