"""Autoscaling end to end: concurrent clients through the edge raise ``desired``; once the
load is gone it drops back to ``min`` in one step (after the quiet period, ``[scale]
down_after``: 4 s here, so the test does not wait out the default 30 s)."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mesh_helpers import MeshProcess, cli, stopped_cleanly, wait_until

DOWN_AFTER = 4.0


def _clients(url: str, n: int, stop: threading.Event) -> list[threading.Thread]:
    def run() -> None:
        while not stop.is_set():
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
    threads = [threading.Thread(target=run, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


@pytest.fixture
def quick_mesh(home: Path) -> Iterator[MeshProcess]:
    """The 3-node mesh with a 4 s scale-down quiet period (``<home>/mycelium.toml``)."""
    (home / "mycelium.toml").write_text(f"[scale]\ndown_after = {DOWN_AFTER}\n")
    proc = MeshProcess(home)
    with stopped_cleanly(proc, home):
        yield proc


@pytest.mark.timeout(120)
def test_desired_follows_in_flight_and_comes_back_to_min(
        quick_mesh: MeshProcess, digests: dict[str, str]) -> None:
    mesh = quick_mesh
    result = cli(mesh.home, "deploy", "hello", digests["hello"], "--min", "1", "--max", "6",
                 "--mem", "16", "--target-concurrency", "2")
    assert result.returncode == 0, result.stderr
    app = mesh.app("hello")
    assert app["desired"] == 1 and app["target_concurrency"] == 2
    stop = threading.Event()
    threads = _clients(f"{mesh.url}/hello/slow?delay=0.2", 8, stop)
    try:
        up = wait_until(lambda: (a := mesh.app("hello"))["desired"] >= 3 and a, 20, "scale up")
        assert "in flight / target 2" in up["desired_reason"]
        mesh.ready("hello", up["desired"])
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    stopped = time.monotonic()
    held = mesh.app("hello")
    assert held["desired"] >= 3  # not at once: the quiet period first
    down = wait_until(lambda: (a := mesh.app("hello"))["desired"] == 1 and a, 30, "scale down")
    assert time.monotonic() - stopped >= DOWN_AFTER - 0.5
    assert down["desired_reason"].startswith("scaled down")
    mesh.ready("hello", 1)
    logs = cli(mesh.home, "logs", "--app", "hello").stdout
    assert "scaled" in logs and "desired 1 →" in logs
