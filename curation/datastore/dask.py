"""Gradient datastore shards computed on the workers of a Dask cluster.

With ``scheduler`` (a ``dask.distributed`` scheduler address), ``build_datastore`` makes each
missing shard one task: the worker computes it, writes the file and its sidecar itself, and
returns only the sha256. Workers write rather than return arrays because a shard holds
``shard_size * checkpoints * dim`` values (64 MiB at the defaults) that would otherwise travel
to the client and sit in its memory; written in place, a finished shard also survives a crash
of the client. So the output directory and the proxy checkpoints must be on a filesystem the
workers share (a shard the client cannot see afterwards is an error naming it). At most two
tasks per worker thread are in flight, which bounds the client's memory when the inputs are a
memmap larger than memory. The bytes do not depend on where a shard ran (a test compares a
``LocalCluster`` build with an in-process one); the scheduler is therefore not part of the
manifest or of the build claim.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from curation.datastore.build import (
    DatastoreSpec,
    FeatureComputer,
    shard_path,
    write_shard,
)
from curation.errors import CurationError
from curation.proxies.base import TrainedProxy

# Feature computers kept per worker thread, so Dask tasks of one build load the proxy once per
# thread. Never shared between threads: functional_call swaps a module's parameters while it
# runs, and two tasks on one module at once computed wrong gradients.
_LOCAL = threading.local()


def shard_task(proxy: TrainedProxy, spec: DatastoreSpec, inputs: np.ndarray, labels: np.ndarray,
               path: str) -> str:
    """One shard, computed and written where this runs (a Dask worker); returns its sha256."""
    key = json.dumps({"proxy": [[c.sha256, str(c.model_path)] for c in proxy.checkpoints],
                      "spec": asdict(spec)}, sort_keys=True)
    cached = getattr(_LOCAL, "computer", None)
    if cached is None or cached[0] != key:
        _LOCAL.computer = cached = (key, FeatureComputer(proxy, spec))
    computer = cached[1]
    return write_shard(Path(path), computer, inputs, labels)


def compute_on_dask(scheduler: str, proxy: TrainedProxy, spec: DatastoreSpec, inputs: np.ndarray,
                    labels: np.ndarray, bounds: list[tuple[int, int]], missing: list[int],
                    out_dir: Path, bar: tqdm) -> dict[int, str]:
    """Compute and write the ``missing`` shards on the cluster at ``scheduler``; their sha256s."""
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
                shard_task, proxy, spec, np.asarray(inputs[start:stop]),
                np.asarray(labels[start:stop]), str(shard_path(out_dir, index)), pure=False,
                key=f"gradient-shard-{token}-{index:05d}-{time.time_ns()}")
            index_of[future.key] = index
            return future

        first = [f for f in (submit() for _ in range(2 * threads)) if f is not None]
        running = as_completed(first, loop=client.loop)
        for future in running:
            index = index_of.pop(future.key)
            digest = future.result()
            path = shard_path(out_dir, index)
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
