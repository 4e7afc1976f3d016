"""Sharded on-disk gradient datastore.

Each example's *trajectory* is its projected gradient feature at every proxy checkpoint:
an array of shape (checkpoints, dim). Rows are written in shards of ``shard_size`` examples
as ``shard-NNNNN.npy`` (float16 by default), and a ``manifest.json`` records shape, dtype,
projection, checkpoint hashes and a sha256 per shard. Opening a store memory-maps the shards.

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
    refused; a lock on ``.lock`` refuses two builds into one directory at once.

Where shards run
    In-process by default. With ``scheduler`` (a ``dask.distributed`` scheduler address)
    each missing shard is one task: the worker computes it, writes the file and its sidecar
    itself, and returns only the sha256. Workers write rather than return arrays because a
    shard holds ``shard_size * checkpoints * dim`` values (64 MiB at the defaults) that would
    otherwise travel to the client and sit in its memory; written in place, a finished shard
    also survives a crash of the client. So the output directory and the proxy checkpoints
    must be on a filesystem the workers share (a shard the client cannot see afterwards is an
    error naming it). At most two tasks per worker thread are in flight, which bounds the
    client's memory when the inputs are a memmap larger than memory. The bytes do not depend
    on where a shard ran (a test compares a ``LocalCluster`` build with an in-process one);
    the scheduler is therefore not part of the manifest or of the build claim.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from curation.config import choice, config
from curation.errors import CurationError
from curation.gradients import (
    FEATURE_KINDS,
    PROJECTORS,
    adam_features,
    make_projector,
    per_example_gradient_blocks,
)
from curation.io import atomic_path, sha256_file, write_atomic, write_json, write_parquet

FORMAT_VERSION = 1
DTYPES = ("float16", "float32")
STATS_FILE = "build-stats.json"


class TrainedProxy(Protocol):
    """What a store needs of a proxy: ``curation.proxy.Proxy`` (classifiers) and
    ``curation.lm.LMProxy`` (causal LMs with LoRA adapters) both provide it."""

    checkpoints: list
    betas: tuple[float, float]
    eps: float

    @property
    def in_dim(self) -> int: ...

    def load_model(self, checkpoint) -> torch.nn.Module: ...

    def load_moments(self, checkpoint) -> dict[str, torch.Tensor]: ...

    def gradient_parameters(self, model: torch.nn.Module, which) -> list[str]: ...

    def example_loss(self, output, target: torch.Tensor) -> torch.Tensor: ...

    def batch(self, inputs: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


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

    def mean(self) -> np.ndarray:
        """Mean trajectory over all rows, (checkpoints, dim) in float64, streamed by shard."""
        total = np.zeros((self.checkpoints, self.dim), dtype=np.float64)
        for shard in self.shards():
            total += shard.astype(np.float64).sum(axis=0)
        return total / max(self.n, 1)

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
        check_scheduler(scheduler)
    if len(inputs) != len(labels) or len(inputs) != len(ids):
        raise CurationError("datastore inputs, labels and ids must have the same length")
    if len(inputs) == 0:
        raise CurationError("datastore needs at least one example")
    if np.ndim(inputs) != 2 or np.shape(inputs)[1] != proxy.in_dim:
        raise CurationError(f"datastore inputs must be (rows, {proxy.in_dim}) for this proxy, "
                            f"got {tuple(np.shape(inputs))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    build = {"spec": asdict(spec), "n": len(inputs), "pool_id": pool_id,
             "proxy_checkpoints": [c.sha256 for c in proxy.checkpoints]}
    with _exclusive(out_dir):
        _claim_directory(out_dir, build)
        for stale in out_dir.glob(".*.tmp"):  # temp files of a killed build: never complete
            stale.unlink()
        computer = _FeatureComputer(proxy, spec)
        bounds = [(s, min(s + spec.shard_size, len(inputs)))
                  for s in range(0, len(inputs), spec.shard_size)]
        shape = (len(proxy.checkpoints), spec.dim)
        digests: dict[int, str] = {}
        for index, (start, stop) in enumerate(bounds):
            digest = _finished_shard(_shard_path(out_dir, index), (stop - start, *shape), spec.dtype)
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
                    digests[index] = _write_shard(_shard_path(out_dir, index), computer,
                                                  inputs[start:stop], labels[start:stop],
                                                  bar.update)
            else:
                digests.update(_compute_on_dask(scheduler, proxy, spec, inputs, labels, bounds,
                                                missing, out_dir, bar))
        write_parquet(out_dir / "ids.parquet", pa.table({"id": pa.array(list(ids), pa.string())}))
        manifest = _manifest(proxy, spec, computer, len(inputs), pool_id, [
            {"file": _shard_path(out_dir, i).name, "rows": list(bounds[i]), "sha256": digests[i]}
            for i in range(len(bounds))])
        write_json(out_dir / "manifest.json", manifest)
        report = BuildReport(tuple(missing), reused, rows_missing,
                             time.perf_counter() - started, scheduler)
        if missing:
            write_json(out_dir / STATS_FILE, {**asdict(report),
                                              "examples_per_second": report.examples_per_second})
    return GradientStore(out_dir, manifest, report)


def _manifest(proxy: TrainedProxy, spec: DatastoreSpec, computer: _FeatureComputer, n: int,
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


class _FeatureComputer:
    """Projected features of a batch of examples at every checkpoint of a proxy."""

    def __init__(self, proxy: TrainedProxy, spec: DatastoreSpec) -> None:
        self.spec = spec
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

    def batches(self, inputs: np.ndarray, labels: np.ndarray) -> Iterator[np.ndarray]:
        """(batch, checkpoints, dim) float32 features of consecutive batches of the rows."""
        checkpoints = len(self.models)
        with torch.no_grad():
            for start in range(0, len(inputs), self.spec.batch_size):
                stop = start + self.spec.batch_size
                x, y = self.to_tensors(inputs[start:stop], labels[start:stop])
                out = np.empty((len(x), checkpoints, self.spec.dim), dtype=np.float32)
                for c, model in enumerate(self.models):
                    blocks = per_example_gradient_blocks(model, self.names, x, y,
                                                         self.example_loss)
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


def _shard_path(out_dir: Path, index: int) -> Path:
    return out_dir / f"shard-{index:05d}.npy"


def _write_shard(path: Path, computer: _FeatureComputer, inputs: np.ndarray,
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


# Feature computers kept per worker thread, so Dask tasks of one build load the proxy once per
# thread. Never shared between threads: functional_call swaps a module's parameters while it
# runs, and two tasks on one module at once computed wrong gradients.
_LOCAL = threading.local()


def _shard_task(proxy: TrainedProxy, spec: DatastoreSpec, inputs: np.ndarray, labels: np.ndarray,
                path: str) -> str:
    """One shard, computed and written where this runs (a Dask worker); returns its sha256."""
    key = json.dumps({"proxy": [[c.sha256, str(c.model_path)] for c in proxy.checkpoints],
                      "spec": asdict(spec)}, sort_keys=True)
    cached = getattr(_LOCAL, "computer", None)
    if cached is None or cached[0] != key:
        _LOCAL.computer = cached = (key, _FeatureComputer(proxy, spec))
    computer = cached[1]
    return _write_shard(Path(path), computer, inputs, labels)


def _compute_on_dask(scheduler: str, proxy: TrainedProxy, spec: DatastoreSpec, inputs: np.ndarray,
                     labels: np.ndarray, bounds: list[tuple[int, int]], missing: list[int],
                     out_dir: Path, bar: tqdm) -> dict[int, str]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise CurationError("a Dask 'scheduler' needs dask.distributed: "
                            "pip install 'dask[distributed]'") from None
    try:
        client = Client(scheduler, timeout=30, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise CurationError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
    token = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:12]
    digests: dict[int, str] = {}
    with client:
        # An adaptive cluster may have no workers until tasks arrive: still submit two.
        threads = max(1, sum(client.nthreads().values()))
        queue = iter(missing)
        index_of = {}

        def submit() -> object | None:
            index = next(queue, None)
            if index is None:
                return None
            start, stop = bounds[index]
            future = client.submit(
                _shard_task, proxy, spec, np.asarray(inputs[start:stop]),
                np.asarray(labels[start:stop]), str(_shard_path(out_dir, index)), pure=False,
                key=f"gradient-shard-{token}-{index:05d}-{time.time_ns()}")
            index_of[future.key] = index
            return future

        first = [f for f in (submit() for _ in range(2 * threads)) if f is not None]
        running = as_completed(first, loop=client.loop)
        for future in running:
            index = index_of.pop(future.key)
            digest = future.result()
            path = _shard_path(out_dir, index)
            if not path.exists():
                raise CurationError(
                    f"a Dask worker wrote {path.name} but it is not visible at {path}: the "
                    "workers must share the output directory with this machine")
            digests[index] = digest
            bar.update(bounds[index][1] - bounds[index][0])
            following = submit()
            if following is not None:
                running.add(following)
    return digests


def check_scheduler(address: str) -> None:
    """Fail fast on a malformed or refused TCP address (a Client would retry for 30 s)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme != "tcp":
            return
        host, port = parse_host_port(location)
        socket.create_connection((host, port), timeout=5).close()
    except (OSError, ValueError, TypeError) as exc:
        raise CurationError(f"cannot reach the Dask scheduler at {address!r}: {exc}") from None


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


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` (released by the kernel if the process dies)."""
    with open(out_dir / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CurationError(f"another build is writing {out_dir}; wait for it to finish") \
                from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
