"""Start ``dagster dev`` on 127.0.0.1, load the asset graph in headless Chromium, save a screenshot.

``make ui-check`` runs this with the project's ``$DAGSTER_HOME``. It fails (non-zero exit, one
line saying why) if the server does not serve the whole asset graph, if Chromium is missing or
fails, or if the rendered page does not show the asset graph. Chromium is not needed by
``make test``; install it with ``apt-get install -y chromium``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# Found next to this script: its directory is sys.path[0] when run as a file.
from dagster_graphql import free_port, stop_process_group, wait_for_asset_keys

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"raw_pool", "gradient_datastore", "scored_subsets", "scored_subset", "dataset_release"}
MAX_ZOOM_OUT_CLICKS = 6
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1600,1000",
                  "--remote-allow-origins=http://127.0.0.1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "asset-graph.png")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args()
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                     if shutil.which(n)), None)
    if chromium is None:
        sys.exit("ui-check: Chromium not found; install it with `apt-get install -y chromium`")
    port = args.port or free_port()
    dagster = Path(sys.executable).with_name("dagster")
    server = subprocess.Popen(
        [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        keys = _wait_for_graph(port, args.timeout)
        missing = EXPECTED - keys
        if missing:
            sys.exit(f"ui-check: the asset graph lacks {sorted(missing)}")
        url = f"http://127.0.0.1:{port}/asset-groups"
        tmp = args.out.with_suffix(".tmp.png")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="ui-check-chromium-") as profile:
            _screenshot(chromium, profile, url, tmp, args.timeout, keys)
        _check_png(tmp)
        os.replace(tmp, args.out)
        print(f"ui-check: {url} shows {len(keys)} assets; screenshot -> {args.out}")
    finally:
        stop_process_group(server)


def _wait_for_graph(port: int, timeout: float) -> set[str]:
    """Asset keys served by the webserver, once the code location has loaded."""
    keys = wait_for_asset_keys(port, timeout, EXPECTED)
    if not keys:
        sys.exit(f"ui-check: dagster dev did not answer on port {port} within {timeout:.0f} s")
    return keys


def _screenshot(chromium: str, profile: str, url: str, out: Path, timeout: float,
                keys: set[str]) -> None:
    """Drive headless Chromium over the DevTools protocol: open ``url``, expand the asset
    groups, zoom out until every served asset (``keys``) is drawn, save a PNG."""
    from websockets.sync.client import connect

    debug_port = free_port()
    browser = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         f"--remote-debugging-port={debug_port}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        target = _page_target(debug_port, browser)
        with connect(target, max_size=64 * 2**20, open_timeout=30) as ws:
            cdp = _Cdp(ws)
            cdp("Emulation.setDeviceMetricsOverride", width=1600, height=1000,
                deviceScaleFactor=1, mobile=False)
            # A fresh profile would greet us with the community/newsletter dialog; mark it seen
            # in this throwaway profile's storage (nothing is written to the Dagster instance).
            cdp("Page.enable")
            cdp("Page.addScriptToEvaluateOnNewDocument",
                source="localStorage.setItem('communityNux', JSON.stringify('1'))")
            cdp("Page.navigate", url=url)
            deadline = time.monotonic() + timeout

            def page_lines() -> set[str]:
                text = cdp("Runtime.evaluate", expression="document.body.innerText",
                           returnByValue=True)["result"].get("value") or ""
                return {line.strip() for line in text.splitlines()}

            def visible() -> set[str]:
                return keys & page_lines()

            # The groups are drawn collapsed: once the page is up, expand them all (the graph's
            # shortcut, Alt+E, a toggle: pressed again only if nothing expanded for a while).
            pressed = 0.0
            while not visible():
                if time.monotonic() > deadline:
                    sys.exit(f"ui-check: {url} shows no asset after {timeout:.0f} s")
                if "Global asset lineage" in page_lines() and time.monotonic() - pressed > 15:
                    for kind in ("rawKeyDown", "keyUp"):
                        cdp("Input.dispatchKeyEvent", type=kind, modifiers=1, key="e",
                            code="KeyE", windowsVirtualKeyCode=69)
                    pressed = time.monotonic()
                time.sleep(1)
            # Once the layout has settled: close the group tree beside the graph (its toggle
            # button), then zoom out (the graph's zoom-out button) until every asset is drawn
            # (the graph only renders nodes inside the viewport).
            time.sleep(4)
            _click(cdp, 512, 80)
            time.sleep(2)
            for _ in range(MAX_ZOOM_OUT_CLICKS):
                if visible() == keys:
                    break
                _click(cdp, 1572, 851)
                time.sleep(2)
            shown = visible()
            if shown != keys:
                sys.exit(f"ui-check: {url} rendered without {sorted(keys - shown)}")
            # Nodes just outside the viewport are drawn too: one more step shows them whole.
            _click(cdp, 1572, 851)
            time.sleep(3)
            data = cdp("Page.captureScreenshot", format="png")["data"]
            out.write_bytes(base64.b64decode(data))
    finally:
        browser.terminate()
        try:
            browser.wait(20)
        except subprocess.TimeoutExpired:
            browser.kill()


def _click(cdp, x: int, y: int, count: int = 1) -> None:
    for kind in ("mousePressed", "mouseReleased"):
        cdp("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=count)


def _page_target(port: int, browser: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            sys.exit(f"ui-check: Chromium exited with status {browser.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit("ui-check: Chromium's DevTools endpoint did not come up within 60 s")


class _Cdp:
    """Minimal synchronous DevTools protocol client: one command at a time."""

    def __init__(self, ws) -> None:
        self.ws, self.next_id = ws, 0

    def __call__(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    sys.exit(f"ui-check: DevTools {method} failed: {message['error']}")
                return message.get("result", {})


def _check_png(path: Path) -> None:
    """The screenshot exists, has the window's size and is not a blank page."""
    import numpy as np
    from matplotlib.image import imread

    if not path.exists():
        sys.exit(f"ui-check: Chromium wrote no screenshot at {path}")
    pixels = imread(path)
    if pixels.shape[:2] != (1000, 1600):
        sys.exit(f"ui-check: screenshot is {pixels.shape[1]}x{pixels.shape[0]}, expected 1600x1000")
    if float(np.std(pixels[..., :3])) < 0.02:
        sys.exit("ui-check: screenshot is blank")


if __name__ == "__main__":
    main()
