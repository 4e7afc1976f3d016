"""Ask a ``dagster dev`` on 127.0.0.1 which assets it serves, over its GraphQL endpoint.

Shared by ``scripts/ui_check.py`` (which imports it from its own directory) and
``tests/e2e/test_dagster_cli.py`` (as ``scripts.dagster_graphql``, the repository root being on
``sys.path`` under pytest). Standard library only and no ``curation`` import, so that it loads
before, and independently of, the project's code.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Collection

ASSET_KEYS_QUERY = "{ assetNodes { assetKey { path } } }"


def stop_process_group(process: subprocess.Popen, grace: float = 30) -> bool:
    """SIGTERM ``process``'s group (webserver and code server together); SIGKILL it after
    ``grace`` seconds. True when it stopped on SIGTERM."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return False


def free_port() -> int:
    """A loopback port that is free now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    """The JSON answer of the webserver on ``127.0.0.1:port`` to ``query``; OSError while it is
    not (yet) listening."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for_asset_keys(port: int, timeout: float, expected: Collection[str] = ()) -> set[str]:
    """Asset keys (``a/b`` for path ``["a", "b"]``) served on ``port``, polled once a second
    until some are served and they include ``expected``.

    ``dagster dev`` answers before its code locations have loaded (with no or only some assets),
    hence the polling. After ``timeout`` seconds, the last answer: empty if the server never
    answered or served no asset, so callers can tell that from assets missing from the graph.
    """
    deadline = time.monotonic() + timeout
    keys: set[str] = set()
    while time.monotonic() < deadline:
        try:
            nodes = graphql(port, ASSET_KEYS_QUERY).get("data", {}).get("assetNodes") or []
            keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
            if keys and keys >= set(expected):
                return keys
        except OSError:
            pass
        time.sleep(1)
    return keys
