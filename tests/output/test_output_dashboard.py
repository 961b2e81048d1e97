"""The dashboard shows each instance's last lines of output and a crashed one's last exit:
a real Dashboard server with stand-in sources (real sockets and threads, no mesh)."""

from __future__ import annotations

import http.client
import time
from typing import Any

import orjson

from mycelium.operator.dashboard import Dashboard, DashboardConfig
from mycelium.operator.dashboard.view import apps_view

EXIT = {"instance": "crashy@node-1#1", "reason": "exit code 3", "at": "2026-12-06T20:45:33.096Z",
        "output_tail": ["crashy: crashing on request (exit code 3)"]}
STATUS = {"apps": [{"app": "crashy", "digest": "d" * 64, "state": "running", "instances": [
    {"id": "crashy@node-1#2", "node": "node-1", "digest": "d" * 64, "state": "Ready",
     "restarts": 1, "last_exit": EXIT}]}], "nodes": [{"name": "node-1", "state": "up"}]}


def test_apps_view_carries_output_and_last_exit() -> None:
    doc = {**STATUS, "apps": [{**STATUS["apps"][0], "instances": [
        {**STATUS["apps"][0]["instances"][0], "output": ["crashy: listening on port 1"]}]}]}
    (inst,) = apps_view(doc)[0]["nodes"][0]["instances"]
    assert inst["output"] == ["crashy: listening on port 1"] and inst["last_exit"] == EXIT


def test_the_page_model_has_each_instance_tail() -> None:
    asked: list[str] = []

    def output(instance: str) -> list[str]:
        asked.append(instance)
        return ["crashy: listening on port 1"]

    board = Dashboard(DashboardConfig(port=0, sample_interval=0.1), tree=lambda: {
        "path": "mesh", "type": "supervisor", "status": "running", "children": []},
        status=lambda: STATUS, output=output)
    board.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", board.port, timeout=5)
            conn.request("GET", "/api/state")
            state: dict[str, Any] = orjson.loads(conn.getresponse().read())
            conn.close()
            insts = [i for a in state["apps"] for n in a["nodes"] for i in n["instances"]]
            if (insts and insts[0]["output"]) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        board.stop()
    assert insts[0]["output"] == ["crashy: listening on port 1"]
    assert insts[0]["last_exit"]["output_tail"] == EXIT["output_tail"]
    assert asked and asked[0] == "crashy@node-1#2"
