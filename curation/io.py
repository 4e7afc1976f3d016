"""Atomic writes: every artifact goes to a temp file in the same directory, then is renamed;
and the checks an output path passes before anything is written to it.

A temp file is named ``.<target>.<host>.<pid>.<random>.tmp``: a process killed before its
rename leaves it behind, and the next write of the same target removes it once that process
is gone (a temp of a live writer, or of another host on a shared filesystem, is left alone).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import CurationError

_HOST = socket.gethostname().replace("/", "_")


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``target``; rename it onto ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_HOST}.{os.getpid()}.", suffix=".tmp",
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Delete the temp files of ``target`` left by writers on this host that have died."""
    target = Path(target)
    prefix = f".{target.name}."
    removed = []
    for stale in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        parts = stale.name[len(prefix):-len(".tmp")].rsplit(".", 2)
        if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
            continue
        if int(parts[1]) != os.getpid() and not _alive(int(parts[1])):
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def check_output_file(path: str | Path, option: str) -> Path:
    """Refuse, before any work, a file output that cannot be written: ``path`` is a
    directory, or its directory cannot be created or written. An existing file is replaced
    atomically when the command finishes."""
    path = Path(path)
    if path.is_dir():
        raise CurationError(f"{option} {path} is a directory; expected a file path")
    _check_writable_parent(path.parent, path, option)
    return path


def check_output_dir(path: str | Path, option: str) -> Path:
    """Refuse, before any work, a directory output that cannot be written: ``path`` is a
    file, or it cannot be created or written. An existing directory is written into (files
    of the same names are replaced atomically)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CurationError(f"{option} {path} is a file; expected a directory")
    _check_writable_parent(path, path, option)
    return path


def _check_writable_parent(directory: Path, path: Path, option: str) -> None:
    """The nearest existing ancestor of ``directory`` is a directory we can create files in,
    tried by creating (and removing) an empty temp file: permission bits say nothing for
    root or for filesystems such as /proc."""
    ancestor = directory.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CurationError(f"{option} {path}: {ancestor} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".curation-write-check.", dir=ancestor)
    except OSError as exc:
        raise CurationError(f"{option} {path}: cannot write in {ancestor} "
                            f"({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def write_atomic(target: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``target``."""
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


def write_json(target: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return write_atomic(target, lambda p: p.write_text(text))


def write_parquet(target: str | Path, table: pa.Table) -> Path:
    return write_atomic(target, lambda p: pq.write_table(table, p))


def write_npy(target: str | Path, array: np.ndarray) -> Path:
    def _save(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, array)

    return write_atomic(target, _save)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
