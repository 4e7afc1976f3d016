"""A datastore's search index: built once per store and backend, checksummed in the manifest,
reused by every selection on that store, rebuilt when stale.

The manifest entry ``indexes[backend]`` records the index's files and their sha256, the
backend's parameters and the shard checksums the index was built from. ``store_index`` loads
the index when the entry matches the store's shards and the files their checksums, and builds
it otherwise (under ``.index.lock``: a concurrent caller waits, then loads what was built).
Files are written to temp names and renamed; the manifest is rewritten atomically.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from curation.datastore.store import GradientStore, read_manifest
from curation.io import atomic_path, sha256_file, write_json

if TYPE_CHECKING:
    from curation.search import SearchIndex

INDEX_FORMAT = 1


def store_index(store: GradientStore, backend: str = "faiss", seed: int = 0) -> SearchIndex:
    """The ``backend`` search index over ``store``'s rows (unit-normalized trajectories)."""
    from curation.pursuit.atoms import AtomSource
    from curation.search import search_backend

    engine = search_backend(backend)
    wanted = {"format": INDEX_FORMAT, "backend": backend, "params": engine.params(),
              "seed": seed, "normalize": True, "source": _source_digest(store.manifest)}
    with open(store.directory / ".index.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            manifest = read_manifest(store.directory)
            entry = manifest.get("indexes", {}).get(backend)
            if entry is not None and _fresh(store.directory, entry, wanted):
                return engine.load(store.directory / entry["file"], normalize=True)
            index = engine.build(AtomSource(store.atoms()), normalize=True, seed=seed)
            name = f"index-{backend}-{wanted['source'][:12]}.faiss"
            files = _save(index, store.directory / name)
            manifest = read_manifest(store.directory)  # as it is now, not as it was opened
            old = manifest.get("indexes", {}).get(backend)
            manifest.setdefault("indexes", {})[backend] = {**wanted, "file": name,
                                                           "sha256": files}
            write_json(store.directory / "manifest.json", manifest)
            if old is not None and old.get("file") != name:
                for stale in old.get("sha256", {}):
                    (store.directory / stale).unlink(missing_ok=True)
            return index
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _source_digest(manifest: dict) -> str:
    """What an index depends on in the store: its id and every shard's checksum."""
    source = {"datastore_id": manifest["datastore_id"],
              "shards": [shard["sha256"] for shard in manifest["shards"]]}
    return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()


def _fresh(directory: Path, entry: dict, wanted: dict) -> bool:
    """Whether a manifest entry was built as ``wanted`` and its files are intact."""
    if any(entry.get(key) != value for key, value in wanted.items()):
        return False
    return all((directory / file).exists() and sha256_file(directory / file) == digest
               for file, digest in entry.get("sha256", {}).items())


def _save(index: SearchIndex, path: Path) -> dict[str, str]:
    """Save ``index`` at ``path`` through temp names; {file name: sha256}."""
    with atomic_path(path) as tmp:
        written = index.save(tmp)
        final = {p: path.with_name(p.name.replace(tmp.name, path.name, 1)) for p in written}
        digests = {final[p].name: sha256_file(p) for p in written}
        for p in written:
            if p != tmp:
                p.replace(final[p])
    return digests
