"""Inter-process file locks that wait: a bounded wait, a status line while waiting, one clear
error when the wait runs out.

Hand-written on ``fcntl.flock`` rather than a lock library because a waiter must say whom it
waits for (the holder writes its pid into the lock file) and the kernel must release the lock
of a process that dies, even by SIGKILL, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from curation.errors import CurationError

STATUS_EVERY = 30.0  # seconds between "still waiting" lines
TIMEOUT_ENV = "CURATION_LOCK_TIMEOUT"


def lock_timeout(default: float) -> float:
    """Seconds to wait for a lock: ``$CURATION_LOCK_TIMEOUT`` if set, else ``default``."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise CurationError(f"${TIMEOUT_ENV} must be a finite number of seconds >= 0, got {text!r}")
    return value


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def wait_for_lock(path: str | Path, what: str, timeout: float,
                  notify: Callable[[str], None] = _stderr,
                  poll: float = 0.2) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing), waiting at most ``timeout``
    seconds for another process to release it; ``notify`` gets a status line when the wait
    starts and every ``STATUS_EVERY`` seconds after. ``what`` names the guarded thing in those
    lines and in the error raised when the time runs out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        started = time.monotonic()
        next_status = started
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= timeout:
                    raise CurationError(
                        f"{what} is still held by another process ({_holder(path)}) after "
                        f"{timeout:g} s; wait for it to finish or raise the timeout") from None
                if time.monotonic() >= next_status:
                    notify(f"waiting for another process ({_holder(path)}) to finish with {what}"
                           f" ({waited:.0f} s of at most {timeout:g} s)")
                    next_status = time.monotonic() + STATUS_EVERY
                time.sleep(poll)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(path: Path) -> str:
    """Who holds the lock at ``path``, as far as its file says."""
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"
