"""Files landing in a watched directory: what is there, and which of it is new.

A file is identified by name, size and modification time, so a pool file replaced under the
same name counts as new. Hidden files and ``*.tmp`` files (writes in progress) are ignored:
drop a file by writing it elsewhere (or under a hidden name) and renaming it into place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LandedFile:
    path: Path
    key: str  # "<name>:<size>:<mtime_ns>"


def landed_files(directory: str | Path, pattern: str) -> list[LandedFile]:
    """Files in ``directory`` matching ``pattern``, oldest first."""
    directory = Path(directory)
    found = []
    for path in directory.glob(pattern):
        if not path.is_file() or path.name.startswith(".") or path.suffix == ".tmp":
            continue
        stat = path.stat()
        found.append((stat.st_mtime_ns, path.name,
                      LandedFile(path.resolve(), f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")))
    return [f for _, _, f in sorted(found, key=lambda t: (t[0], t[1]))]


def resolve_beside(directory: str | Path, name: str) -> Path:
    """``name`` if absolute, else ``directory / name``."""
    path = Path(name)
    return path if path.is_absolute() else Path(directory) / path
