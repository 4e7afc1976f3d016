"""The build side of a gradient datastore: compute, write and resume its shards.

Each example's *trajectory* is its projected gradient feature at every proxy checkpoint:
an array of shape (checkpoints, dim). Rows are written in shards of ``shard_size`` examples
(float16 by default) in the format of ``curation.datastore.store``.

Memory
    A shard is computed batch by batch (``batch_size`` examples, every checkpoint) and each
    batch is appended to the shard's temp file, so memory holds one batch's gradients and
    projections, independent of ``shard_size`` and of the number of examples (inputs may be a
    memmap; only a shard's rows are read at a time). ``benchmarks/bench_gradients.py``
    measures it.

Threads
    Torch and the projection kernel use all cores. On a machine whose cores are busy with
    other work, OpenMP spin-waiting can make a 2-thread batch several times slower than a
    1-thread one (measured: 133 ms against 17 ms for the per-example gradients of 256
    examples); there set ``OMP_WAIT_POLICY=PASSIVE`` or fewer threads
    (``OMP_NUM_THREADS=1``), or run shards on Dask workers, which use one thread per task.

Resume
    A shard is written to a temp file, flushed to disk and renamed into place; only then is
    its sha256 written beside it (``shard-NNNNN.sha256``). A build keeps a shard already on
    disk only if that sidecar exists and matches the file, so a shard cut off by a kill (or
    damaged since) is recomputed, never taken as complete. A shard depends only on its rows,
    the proxy and the spec, so a resumed build is bitwise identical to an uninterrupted one.
    ``build.json`` records what the directory holds and a build of anything else into it is
    refused. Two builds into one directory take turns on ``.lock``: the second waits (a status
    line every 30 s, at most ``$CURATION_LOCK_TIMEOUT`` seconds, default one hour) and then
    keeps the shards the first one finished. Everything that can be refused (parameter names,
    shapes) is checked before the directory, ``build.json`` or ``.lock`` is written.

Where shards run
    In-process by default; with ``scheduler``, on Dask workers (``curation.datastore.dask``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from curation.config import choice, config
from curation.datastore.store import DTYPES, FORMAT_VERSION, STATS_FILE, GradientStore
from curation.errors import CurationError
from curation.gradients import FEATURE_KINDS, adam_features, per_example_gradient_blocks
from curation.io import atomic_path, sha256_file, write_atomic, write_json, write_parquet
from curation.locks import lock_timeout, wait_for_lock
from curation.projectors import PROJECTORS, make_projector
from curation.proxies.base import TrainedProxy

# A second build into a busy directory waits this long (seconds) for the first one.
BUILD_LOCK_TIMEOUT = 3600.0


@config("datastore")
class DatastoreSpec:
    """How gradient features are computed and stored (everything that changes the bytes)."""

    kind: choice(FEATURE_KINDS) = Field(
        default="sgd", description="Feature kind: sgd (plain gradients) or adam (LESS).")
    dim: int = Field(default=1024, gt=0, description="Projection dimension per checkpoint.")
    seed: int = Field(default=0, description="Projection seed.")
    dtype: choice(DTYPES) = Field(default="float16", description="Stored dtype.")
    shard_size: int = Field(default=8192, gt=0, description="Examples per shard file.")
    batch_size: int = Field(default=256, gt=0, description="Examples per vmap gradient batch.")
    params: str | tuple[str, ...] = Field(
        default="all", description="Parameters whose gradients are recorded: 'all' (default; every "
        "proxy parameter, and the proxies are heads: a linear layer over frozen text embeddings or a "
        "one-hidden-layer MLP), 'last' (the output layer only), or comma-separated names.")
    normalize: bool = Field(default=False, description="L2-normalize each projected feature.")
    projection: choice(PROJECTORS) = Field(
        default="srht", description="srht (subsampled randomized Hadamard, fast) or gaussian "
                                    "(dense blockwise).")

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, params):
        if isinstance(params, str):
            if params not in ("all", "last"):
                raise ValueError(f"must be 'all', 'last' or a list of parameter names, got {params!r}")
            return params
        if (not isinstance(params, list | tuple) or not params
                or not all(isinstance(n, str) for n in params)):
            raise ValueError(f"names must be a non-empty list of strings, got {params!r}")
        return tuple(params)


def parse_params(text: str) -> str | tuple[str, ...]:
    """``params`` from text: ``all``, ``last``, or comma-separated parameter names.

    >>> parse_params("last"), parse_params("0.weight, 2.bias")
    ('last', ('0.weight', '2.bias'))
    """
    if text.strip() in ("all", "last"):
        return text.strip()
    return tuple(n.strip() for n in text.split(",") if n.strip())


@dataclass(frozen=True)
class BuildReport:
    """What one ``build_datastore`` call did: shards computed and kept, and how fast."""

    computed: tuple[int, ...]
    reused: tuple[int, ...]
    rows_computed: int
    seconds: float
    scheduler: str | None = None

    @property
    def examples_per_second(self) -> float | None:
        """Rows computed per second of this call (None if every shard was already there)."""
        return self.rows_computed / max(self.seconds, 1e-9) if self.rows_computed else None


def build_datastore(proxy: TrainedProxy, inputs: np.ndarray, labels: np.ndarray, ids: Sequence[str],
                    out_dir: str | Path, spec: DatastoreSpec = DatastoreSpec(),  # noqa: B008 - frozen
                    pool_id: str = "", progress: bool = False,
                    scheduler: str | None = None) -> GradientStore:
    """Compute projected gradient trajectories of every example; resume from existing shards.

    ``scheduler``: a ``dask.distributed`` scheduler address to compute the missing shards on
    its workers (which must see ``out_dir`` and the proxy checkpoints); None computes here.
    """
    out_dir = Path(out_dir)
    if scheduler is not None:
        # Imported here: the Dask module builds on this one's shard writer.
        from curation.datastore.dask import check_scheduler, compute_on_dask

        check_scheduler(scheduler)
    if len(inputs) != len(labels) or len(inputs) != len(ids):
        raise CurationError("datastore inputs, labels and ids must have the same length")
    if len(inputs) == 0:
        raise CurationError("datastore needs at least one example")
    if np.ndim(inputs) != 2 or np.shape(inputs)[1] != proxy.in_dim:
        raise CurationError(f"datastore inputs must be (rows, {proxy.in_dim}) for this proxy, "
                            f"got {tuple(np.shape(inputs))}")
    started = time.perf_counter()
    build = {"spec": asdict(spec), "n": len(inputs), "pool_id": pool_id,
             "proxy_checkpoints": [c.sha256 for c in proxy.checkpoints]}
    # Validates the parameter names against the proxy: before anything is written.
    computer = FeatureComputer(proxy, spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        _claim_directory(out_dir, build)
        for stale in out_dir.glob(".*.tmp"):  # temp files of a killed build: never complete
            stale.unlink()
        bounds = [(s, min(s + spec.shard_size, len(inputs)))
                  for s in range(0, len(inputs), spec.shard_size)]
        shape = (len(proxy.checkpoints), spec.dim)
        digests: dict[int, str] = {}
        for index, (start, stop) in enumerate(bounds):
            digest = _finished_shard(shard_path(out_dir, index), (stop - start, *shape), spec.dtype)
            if digest is not None:
                digests[index] = digest
        reused = tuple(sorted(digests))
        missing = [i for i in range(len(bounds)) if i not in digests]
        rows_missing = sum(bounds[i][1] - bounds[i][0] for i in missing)
        with tqdm(total=len(inputs), initial=len(inputs) - rows_missing, unit="ex",
                  desc="gradient shards", disable=not progress) as bar:
            if scheduler is None:
                for index in missing:
                    start, stop = bounds[index]
                    digests[index] = write_shard(shard_path(out_dir, index), computer,
                                                 inputs[start:stop], labels[start:stop],
                                                 bar.update)
            else:
                digests.update(compute_on_dask(scheduler, proxy, spec, inputs, labels, bounds,
                                               missing, out_dir, bar))
        write_parquet(out_dir / "ids.parquet", pa.table({"id": pa.array(list(ids), pa.string())}))
        manifest = _manifest(proxy, spec, computer, len(inputs), pool_id, [
            {"file": shard_path(out_dir, i).name, "rows": list(bounds[i]), "sha256": digests[i]}
            for i in range(len(bounds))])
        write_json(out_dir / "manifest.json", manifest)
        report = BuildReport(tuple(missing), reused, rows_missing,
                             time.perf_counter() - started, scheduler)
        if missing:
            write_json(out_dir / STATS_FILE, {**asdict(report),
                                              "examples_per_second": report.examples_per_second})
    return GradientStore(out_dir, manifest, report)


def _manifest(proxy: TrainedProxy, spec: DatastoreSpec, computer: FeatureComputer, n: int,
              pool_id: str, shards: list[dict]) -> dict:
    manifest = {
        "format": FORMAT_VERSION, "n": n, "dim": spec.dim, "dtype": spec.dtype,
        "feature_kind": spec.kind,
        "params": spec.params if isinstance(spec.params, str) else list(spec.params),
        "param_names": computer.names,
        "normalize": spec.normalize, "n_params": computer.n_params,
        "shard_size": spec.shard_size, "batch_size": spec.batch_size,
        "projection": computer.projector.describe(), "pool_id": pool_id,
        "proxy_checkpoints": [c.sha256 for c in proxy.checkpoints],
        "checkpoint_lrs": [c.lr for c in proxy.checkpoints],
        "shape": [n, len(proxy.checkpoints), spec.dim], "shards": shards,
    }
    manifest["datastore_id"] = hashlib.sha256(
        json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    return manifest


class FeatureComputer:
    """Projected features of a batch of examples at every checkpoint of a proxy."""

    def __init__(self, proxy: TrainedProxy, spec: DatastoreSpec) -> None:
        self.spec, self.proxy = spec, proxy
        self.models = [proxy.load_model(c) for c in proxy.checkpoints]
        self.names = proxy.gradient_parameters(self.models[0], spec.params)
        self.example_loss, self.to_tensors = proxy.example_loss, proxy.batch
        params = dict(self.models[0].named_parameters())
        self.n_params = int(sum(params[n].numel() for n in self.names))
        self.projector = make_projector(spec.projection, self.n_params, spec.dim, spec.seed)
        # Per checkpoint, per recorded parameter: the flattened Adam moments (exp_avg, exp_avg_sq).
        self.moments: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        if spec.kind == "adam":
            for ckpt in proxy.checkpoints:
                state = proxy.load_moments(ckpt)
                self.moments.append([(state[f"exp_avg.{n}"].reshape(-1),
                                      state[f"exp_avg_sq.{n}"].reshape(-1)) for n in self.names])
        self.betas, self.eps = proxy.betas, proxy.eps

    def _gradients(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[list[torch.Tensor]]:
        """Per checkpoint, the batch's per-example gradient blocks. A proxy with
        ``batch_gradients`` computes them itself (a causal LM shares its frozen prefix's
        states across checkpoints); otherwise one ``vmap(grad)`` per checkpoint."""
        own = getattr(self.proxy, "batch_gradients", None)
        if own is not None:
            yield from own(self.models, self.names, x, y)
            return
        for model in self.models:
            yield per_example_gradient_blocks(model, self.names, x, y, self.example_loss)

    def batches(self, inputs: np.ndarray, labels: np.ndarray) -> Iterator[np.ndarray]:
        """(batch, checkpoints, dim) float32 features of consecutive batches of the rows."""
        checkpoints = len(self.models)
        with torch.no_grad():
            for start in range(0, len(inputs), self.spec.batch_size):
                stop = start + self.spec.batch_size
                x, y = self.to_tensors(inputs[start:stop], labels[start:stop])
                out = np.empty((len(x), checkpoints, self.spec.dim), dtype=np.float32)
                for c, blocks in enumerate(self._gradients(x, y)):
                    # A proxy may compute on a GPU; features and projections are CPU work.
                    blocks = [b.cpu() for b in blocks]
                    if self.moments:
                        blocks = [adam_features(g, m, v, self.betas, self.eps)
                                  for g, (m, v) in zip(blocks, self.moments[c], strict=True)]
                    projected = self.projector(blocks)
                    if self.spec.normalize:
                        projected = torch.nn.functional.normalize(projected, dim=1)
                    out[:, c] = projected.numpy()
                yield out


def shard_path(out_dir: Path, index: int) -> Path:
    """Where shard ``index`` of the store in ``out_dir`` is written."""
    return out_dir / f"shard-{index:05d}.npy"


def write_shard(path: Path, computer: FeatureComputer, inputs: np.ndarray,
                labels: np.ndarray, on_rows: Callable[[int], object] | None = None) -> str:
    """Compute a shard into a temp file, fsync, rename; then write its sha256 sidecar.

    Batches are appended to the file as they are computed (C order makes them consecutive
    bytes), so memory holds one batch, never the whole shard.
    """
    dtype = np.dtype(computer.spec.dtype)
    shape = (len(inputs), len(computer.models), computer.spec.dim)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            # The header np.save writes for this dtype and shape.
            np.lib.format.write_array_header_1_0(f, {
                "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                "shape": shape})
            for features in computer.batches(inputs, labels):
                f.write(_checked_cast(features, dtype, path).tobytes())
                if on_rows is not None:
                    on_rows(len(features))
            f.flush()
            # On disk before the rename, so a crash cannot leave a named but empty shard.
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
    write_atomic(path.with_suffix(".sha256"), lambda p: p.write_text(digest + "\n"))
    return digest


def _checked_cast(features: np.ndarray, dtype: np.dtype, path: Path) -> np.ndarray:
    if not np.isfinite(features).all():
        raise CurationError(f"{path.name}: non-finite gradient features; check the proxy "
                            "checkpoints")
    with np.errstate(over="ignore"):  # overflow is checked just below, with a better message
        cast = features.astype(dtype)
    if not np.isfinite(cast).all():
        raise CurationError(
            f"{path.name}: gradient features exceed the {dtype} range (largest magnitude "
            f"{np.abs(features).max():.3g}); store them as float32 or set normalize")
    return cast


def _finished_shard(path: Path, shape: tuple[int, ...], dtype: str) -> str | None:
    """sha256 of a complete shard at ``path``, or None if it must be (re)computed."""
    sidecar = path.with_suffix(".sha256")
    if not path.exists() or not sidecar.exists():
        return None
    digest = sha256_file(path)
    if digest != sidecar.read_text().strip():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return None
    return digest if array.shape == shape and array.dtype == np.dtype(dtype) else None


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


def _exclusive(out_dir: Path) -> AbstractContextManager[None]:
    """Hold the build lock of ``out_dir``, waiting for a build already writing there
    (released by the kernel if its process dies)."""
    return wait_for_lock(out_dir / ".lock", f"the datastore build in {out_dir}",
                         lock_timeout(BUILD_LOCK_TIMEOUT))
