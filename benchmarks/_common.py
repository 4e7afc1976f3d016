"""Peak-memory readings shared by the benchmarks, in their own process and in child processes
(``bench_gradients``' datastore builds, ``bench_pursuit``'s Dask workers).

Standard library only: child processes import it before (or without) the project's code. The
benchmarks import it as ``_common`` from their own directory (``sys.path[0]`` when run as a
file); child processes get that directory on ``sys.path`` from their parent.
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path


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
