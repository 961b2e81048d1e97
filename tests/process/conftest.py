"""Fixtures for the workload process layer: every spawned workload is stopped after the test;
a small health server for the probes."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from process_helpers import Spawner, is_our_zombie

from mycelium.node.process import Workload, spawn


@pytest.fixture
def spawned(tmp_path: Path) -> Iterator[Spawner]:
    """``spawned(argv)`` starts a workload in tmp_path and guarantees it is gone afterwards."""
    started: list[Workload] = []

    def start(argv: Sequence[str], env: dict[str, str] | None = None) -> Workload:
        workload = spawn(argv, tmp_path, env or {}, tmp_path / "logs" / "out.log")
        started.append(workload)
        return workload

    yield start
    for workload in started:
        workload.terminate(grace=0.5)
    assert [w.pid for w in started if is_our_zombie(w.pid)] == [], "unreaped children"


class _Health(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = 200 if self.path.startswith("/health") else 500
        body = b'{"status": "ok"}' * (8000 if "big" in self.path else 1)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 would drop the SYNs of 20 probes at once


@pytest.fixture
def health_server() -> Iterator[int]:
    """A local HTTP server: ``/health*`` answers 200 (``/health-big`` with 128 KB), else 500."""
    server = _Server(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)
