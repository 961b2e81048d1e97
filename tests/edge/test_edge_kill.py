"""An upstream process killed with SIGKILL under load: the edge retries, clients see only 200."""

from __future__ import annotations

import functools
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from edge_helpers import Listener, table

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


def load(port: int, stop: threading.Event, answered: Callable[[int], None],
         errors: list[str]) -> None:
    """GET /hello/ on one keep-alive connection until ``stop``, each status to ``answered``;
    an exception (a request the edge failed) ends it, in ``errors``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        while not stop.is_set():
            conn.request("GET", "/hello/")
            resp = conn.getresponse()
            resp.read()
            answered(resp.status)
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        conn.close()


@pytest.mark.timeout(40)
def test_sigkill_of_one_upstream_under_load_costs_no_request(edges):
    procs = [start_backend(), start_backend()]
    try:
        edge = edges(table(hello=[f"http://127.0.0.1:{port}" for _, port in procs]))
        statuses: list[int] = []
        errors: list[str] = []
        stop = threading.Event()

        workers = [threading.Thread(target=load, args=(edge.port, stop, statuses.append, errors))
                   for _ in range(8)]
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


class Tripwire:
    """A listener on a dead endpoint's port: counts the connections the edge still makes
    there (each is closed at once, which the edge retries elsewhere, as a refusal)."""

    def __init__(self, port: int) -> None:
        self.hits = 0
        self.listener = Listener(self._hit, port)

    def _hit(self, conn: socket.socket) -> None:
        self.hits += 1
        conn.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.timeout(60)
def test_a_killed_endpoint_leaves_every_worker_at_once_and_no_request_fails(edges):
    """kill -9 of an upstream under load through a 2-worker edge, the test acting as the
    fabric: once the snapshot without it reached every worker, no worker connects to it again
    (max_fails and eject_after are high: neither passive health nor ejection may hide a
    worker that still routes there)."""
    procs = [start_backend() for _ in range(3)]
    tripwire: Tripwire | None = None
    stop = threading.Event()
    try:
        urls = [f"http://127.0.0.1:{port}" for _, port in procs]
        edge = edges(table(hello=urls), workers=2, max_fails=1000, eject_after=1000)
        done: list[int] = []  # per thread: requests answered
        errors: list[str] = []

        def answered(n: int, status: int) -> None:
            if status != 200:
                errors.append(f"status {status}")
            done[n] += 1

        threads = [threading.Thread(target=load, args=(edge.port, stop,
                                                       functools.partial(answered, n), errors))
                   for n in range(6)]
        done.extend(0 for _ in threads)
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30

        def wait_each(more: int) -> None:
            """Until every load thread answered ``more`` requests beyond now."""
            goal = [n + more for n in done]
            while any(n < g for n, g in zip(done, goal, strict=True)) and not errors:
                assert time.monotonic() < deadline, "the load stalled"
                time.sleep(0.005)  # polls a condition with a deadline

        wait_each(30)
        victim, port = procs[0]
        os.killpg(victim.pid, signal.SIGKILL)  # the fabric sees the exit, then pushes
        victim.wait(5)
        tripwire = Tripwire(port)
        edge.set_routes(table(hello=urls[1:]))  # returns once every worker applied it
        wait_each(1)  # what was routed before the swap is answered
        after = tripwire.hits
        wait_each(50)
        stop.set()
        for t in threads:
            t.join(10)
        assert errors == []
        assert tripwire.hits == after, "a worker still routed to the removed endpoint"
        assert edge.push_seconds(), "the push to every worker was timed"
    finally:
        stop.set()
        if tripwire is not None:
            tripwire.close()
        for proc, _ in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
