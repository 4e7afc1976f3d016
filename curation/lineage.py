"""Lineage: canonical config hashes, code version, and the record stored with a selection.

A selection's lineage answers "what made this subset": the selector config and its canonical
hash, the gradient datastores and proxy checkpoints the selector actually read, the content
hash of the pool, the code version (git commit + dirty flag) and when it was made.
``lineage_problems`` is the completeness test the asset checks and releases rely on.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import curation

# Keys every selection lineage carries (the selection data contract, docs/architecture.md).
REQUIRED_KEYS = ("selector", "config", "config_hash", "k", "n_pool", "datastore_id",
                 "proxy_checkpoints", "pool_id", "code_version", "created_at")
_SHA256 = re.compile(r"[0-9a-f]{64}")  # always fullmatch: "$" would accept a trailing newline
_GIT_SHA = re.compile(r"[0-9a-f]{40}")


def canonical_json(config: Any) -> str:
    """JSON with sorted keys and numbers in one spelling: equal configs, equal text.

    Floats are written in shortest round-trip form (``5e-2`` and ``0.05`` agree) and a float
    holding a whole number is written as that integer (``25.0`` and ``25`` agree); tuples
    are lists. Non-finite numbers are refused.
    """
    return json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))


def config_hash(config: Any) -> str:
    """First 16 hex digits of the sha256 of ``canonical_json(config)``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"config values must be finite, got {value}")
        return int(value) if value.is_integer() else repr(value)
    if hasattr(value, "item"):  # numpy scalars
        return _canonical(value.item())
    raise ValueError(f"config values must be JSON-like, got {type(value).__name__}: {value!r}")


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
                      target_id: str | None = None, n_pool: int | None = None) -> dict:
    """The lineage record stored beside a selection (the selection data contract, docs/architecture.md)."""
    config = {**selector_config, "budget": budget}
    return {
        "selector": selector_config["selector"],
        "config": config,
        "config_hash": config_hash(config),
        "k": k,
        "n_pool": n_pool,
        "datastore_id": datastore_id,
        "proxy_checkpoints": list(proxy_checkpoints),
        "pool_id": pool_id,
        "target_id": target_id,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def selection_id(lineage: dict) -> str:
    """A selection's identity: its config on its inputs (pool, datastore, target)."""
    return config_hash({k: lineage.get(k) for k in
                        ("config_hash", "pool_id", "datastore_id", "target_id")})


def lineage_problems(lineage: dict, needs: tuple[str, ...] = ()) -> list[str]:
    """Everything missing or malformed in a lineage record; empty when it is complete.

    ``needs`` are the selector's declared inputs: a selector that reads gradients must name
    its datastore and the proxy checkpoints behind it; one that reads the proxy's predictions
    must name the checkpoints.
    """
    problems = [f"missing key {key!r}" for key in REQUIRED_KEYS if key not in lineage]
    if problems:
        return problems
    config = lineage["config"]
    if not isinstance(config, dict) or "selector" not in config or "budget" not in config:
        problems.append("'config' must be a dict with 'selector' and 'budget'")
    else:
        try:
            if config_hash(config) != lineage["config_hash"]:
                problems.append(f"'config_hash' {lineage['config_hash']!r} does not match the "
                                f"config (expected {config_hash(config)!r})")
        except ValueError as exc:
            problems.append(f"'config' cannot be hashed: {exc}")
        if config.get("selector") != lineage["selector"]:
            problems.append("'selector' differs from config['selector']")
    if not isinstance(lineage["pool_id"], str) or not _SHA256.fullmatch(lineage["pool_id"]):
        problems.append("'pool_id' must be the pool's sha256 content hash")
    if not isinstance(lineage["k"], int) or lineage["k"] < 1:
        problems.append("'k' must be a positive count")
    if not isinstance(lineage["n_pool"], int) or lineage["n_pool"] < 1:
        problems.append("'n_pool' must be the pool's row count")
    checkpoints = lineage["proxy_checkpoints"]
    if not isinstance(checkpoints, list) or not all(
            isinstance(c, str) and _SHA256.fullmatch(c) for c in checkpoints):
        problems.append("'proxy_checkpoints' must be a list of sha256 hashes")
    elif ({"gradients", "proxy"} & set(needs)) and not checkpoints:
        problems.append("'proxy_checkpoints' is empty but the selector reads the proxy")
    if "gradients" in needs and not lineage["datastore_id"]:
        problems.append("'datastore_id' is empty but the selector reads gradients")
    code = lineage["code_version"]
    if not isinstance(code, dict) or not code.get("package_version") or \
            not isinstance(code.get("dirty"), bool) or \
            not (code.get("git_sha") == "unknown" or _GIT_SHA.fullmatch(str(code.get("git_sha")))):
        problems.append("'code_version' needs git_sha (40 hex or 'unknown'), dirty (bool) "
                        "and package_version")
    try:
        datetime.fromisoformat(str(lineage["created_at"]))
    except ValueError:
        problems.append("'created_at' must be an ISO 8601 timestamp")
    return problems
