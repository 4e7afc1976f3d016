"""Lineage: canonical config hashes, code version, and the record stored with a selection."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import curation


def canonical_json(config: Any) -> str:
    """JSON with sorted keys and floats in shortest round-trip form: equal configs, equal text."""
    return json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))


def config_hash(config: Any) -> str:
    """First 16 hex digits of the sha256 of ``canonical_json(config)``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"config values must be finite, got {value}")
        return repr(value)
    if hasattr(value, "item"):  # numpy scalars
        return _canonical(value.item())
    return value


def code_version() -> dict:
    """The git commit of the code (with a dirty flag) and the package version."""
    root = Path(curation.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=root, capture_output=True, text=True,
                                    check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        sha, dirty = "unknown", False
    return {"git_sha": sha, "dirty": dirty, "package_version": curation.__version__}


def selection_lineage(selector_config: dict, *, budget: float, k: int, pool_id: str,
                      datastore_id: str | None, proxy_checkpoints: list[str],
                      target_id: str | None = None) -> dict:
    """The lineage record stored beside a selection (DESIGN.md data contract)."""
    config = {**selector_config, "budget": budget}
    return {
        "selector": selector_config["selector"],
        "config": config,
        "config_hash": config_hash(config),
        "k": k,
        "datastore_id": datastore_id,
        "proxy_checkpoints": proxy_checkpoints,
        "pool_id": pool_id,
        "target_id": target_id,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
