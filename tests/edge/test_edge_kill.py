"""An upstream process killed with SIGKILL under load: the edge retries, clients see only 200."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from edge_helpers import table

BACKEND = """
import sys
from aiohttp import web
async def hello(request):
    return web.Response(text="hello")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def start_backend() -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", BACKEND, str(port)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "backend did not start"
            time.sleep(0.02)  # polls a condition with a deadline


@pytest.mark.timeout(40)
def test_sigkill_of_one_upstream_under_load_costs_no_request(edges):
    procs = [start_backend(), start_backend()]
    try:
        edge = edges(table(hello=[f"http://127.0.0.1:{port}" for _, port in procs]))
        statuses: list[int] = []
        errors: list[str] = []
        stop = threading.Event()

        def load() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
            try:
                while not stop.is_set():
                    conn.request("GET", "/hello/")
                    resp = conn.getresponse()
                    resp.read()
                    statuses.append(resp.status)
            except Exception as exc:
                errors.append(repr(exc))
            finally:
                conn.close()

        workers = [threading.Thread(target=load) for _ in range(8)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 10
        while len(statuses) < 200 and time.monotonic() < deadline:
            time.sleep(0.005)  # polls a condition with a deadline
        victim = procs[0][0]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(5)
        seen = len(statuses)
        while len(statuses) < seen + 300 and time.monotonic() < deadline + 10:
            time.sleep(0.005)
        stop.set()
        for w in workers:
            w.join(10)
        assert errors == []
        assert len(statuses) >= seen + 300 and set(statuses) == {200}
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
