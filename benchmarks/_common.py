"""Timing and peak-memory readings shared by the benchmarks, in their own process and in child processes
(``bench_gradients``' datastore builds, ``bench_pursuit``'s Dask workers).

Standard library only: child processes import it before (or without) the project's code. The
benchmarks import it as ``_common`` from their own directory (``sys.path[0]`` when run as a
file); child processes get that directory on ``sys.path`` from their parent.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable
from pathlib import Path


def fastest(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Seconds of the fastest of ``repeats`` runs of each function, the functions interleaved.

    On a machine shared with other work the fastest run is the least disturbed one, and
    interleaving gives every function the same conditions.
    """
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def proc_status_bytes(key: str) -> int | None:
    """A memory field of ``/proc/self/status`` (``VmHWM``, ``VmRSS``, ``RssAnon``...) in
    bytes; None if absent (not Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> None:
    """Start a new peak-RSS measurement (Linux: clear_refs 5 resets VmHWM); else a no-op."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """Peak resident memory since the last reset (VmHWM), else since the process started."""
    hwm = proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
