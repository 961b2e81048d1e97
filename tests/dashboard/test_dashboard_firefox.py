"""The same page in Firefox, driven over WebDriver BiDi (no geckodriver needed).

Skipped when ``firefox-esr``/``firefox`` is not installed, except in CI (``CI`` set), where
that is a failure: ``.ci/run`` installs ``firefox-esr`` beside Chromium.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

import aiohttp
import pytest
from dash_helpers import MeshWithDashboard, free_port

pytestmark = pytest.mark.timeout(60)

PROBE = """JSON.stringify({
    ready: document.querySelectorAll('#tree .entry[data-state=Ready][data-pid]').length,
    nodes: document.querySelectorAll('#tree .entry[data-path^="mesh/nodes/node-"]').length,
    log: document.querySelectorAll('#log li').length,
    conn: document.getElementById('conn').textContent})"""


class Bidi:
    """A minimal WebDriver BiDi client: commands by id, ``log.entryAdded`` events kept."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.logs: list[dict[str, Any]] = []

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        my = self.next_id
        await self.ws.send_json({"id": my, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=20)
            if msg.get("method") == "log.entryAdded":
                self.logs.append(msg["params"])
            elif msg.get("id") == my:
                assert msg.get("type") == "success", msg
                return dict(msg["result"])


async def _drive(port: int, url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 20
        while True:
            try:
                ws = await session.ws_connect(f"ws://127.0.0.1:{port}/session")
                break
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        bidi = Bidi(ws)
        await bidi.call("session.new", {"capabilities": {}})
        await bidi.call("session.subscribe", {"events": ["log.entryAdded"]})
        ctx = (await bidi.call("browsingContext.getTree", {}))["contexts"][0]["context"]
        await bidi.call("browsingContext.navigate", {"context": ctx, "url": url,
                                                     "wait": "complete"})
        page: dict[str, Any] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            result = await bidi.call("script.evaluate", {"expression": PROBE,
                                                         "target": {"context": ctx},
                                                         "awaitPromise": False})
            page = json.loads(result["result"]["value"])
            if page["ready"] >= 3 and page["conn"] == "live" and page["log"]:
                break
            await asyncio.sleep(0.1)
        await ws.close()
        return page, bidi.logs


def test_firefox_shows_the_live_page_without_console_errors(mesh: MeshWithDashboard) -> None:
    binary = shutil.which("firefox-esr") or shutil.which("firefox")
    if binary is None:
        message = "Firefox is not installed (apt-get install -y firefox-esr)"
        if os.environ.get("CI"):  # .ci/run installs it: in CI a missing Firefox is a failure
            pytest.fail(message)
        pytest.skip(message)
    port, profile = free_port(), tempfile.mkdtemp(prefix="mycelium-firefox-")
    browser = subprocess.Popen([binary, "--headless", "--no-remote", "-profile", profile,
                                "--remote-debugging-port", str(port), "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        page, logs = asyncio.run(_drive(port, mesh.ui_url))
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
    assert page["ready"] == 3 and page["nodes"] >= 3 and page["conn"] == "live", page
    assert [entry for entry in logs if entry.get("level") == "error"] == []
