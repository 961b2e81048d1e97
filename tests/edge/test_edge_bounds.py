"""Connections are bounded: a cap on open connections, a head deadline from accept, slowloris."""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time

import pytest
from edge_helpers import request, table
from hypothesis import given
from hypothesis import strategies as st

from mycelium.edge.limits import FD_RESERVE_MIN, connection_cap, raise_nofile_limit


def closed_by_peer(s: socket.socket) -> bool:
    """Block until the edge closes ``s`` (EOF, reset or a 408); False if it answered else."""
    try:
        data = s.recv(65536)
    except ConnectionResetError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 408")


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)  # polls a condition with a deadline


# -- the cap, as a pure function ----------------------------------------------------------------

def test_the_cap_is_the_configured_one_when_descriptors_are_plenty():
    assert connection_cap(10_000, 1_048_576) == 10_000
    assert connection_cap(10_000, -1) == 10_000
    assert connection_cap(10_000, resource.RLIM_INFINITY) == 10_000


def test_the_cap_leaves_the_control_plane_a_reserve_and_each_client_an_upstream():
    assert connection_cap(10_000, 1024) == (1024 - FD_RESERVE_MIN) // 2
    assert connection_cap(10, 1024) == 10
    assert connection_cap(10_000, 100) == 1  # a tiny limit still serves someone


@given(configured=st.integers(1, 10**7), nofile=st.integers(1, 10**7))
def test_the_cap_never_exceeds_config_nor_leaves_less_than_the_reserve(configured, nofile):
    cap = connection_cap(configured, nofile)
    assert 1 <= cap <= configured
    if cap > 1:
        assert nofile - 2 * cap >= max(FD_RESERVE_MIN, nofile // 8)


def test_raising_the_descriptor_limit_reaches_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
        now = raise_nofile_limit()
        if hard == resource.RLIM_INFINITY:
            assert now == -1 or now >= min(soft, 512)  # the kernel may refuse "unlimited"
        else:
            assert now == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- a real edge ----------------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_beyond_max_connections_new_connections_are_closed_at_once(upstreams, edges):
    up = upstreams()  # one process: its connection gauge is exact at once
    edge = edges(table(hello=[up.url]), max_connections=5, header_timeout=30.0, workers=0)
    held = [socket.create_connection(("127.0.0.1", edge.port), timeout=10) for _ in range(5)]
    try:
        wait_for(lambda: "mycelium_edge_connections 5" in metrics(edge, held))
        extra = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
        with extra:
            extra.sendall(b"GET /hello/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert closed_by_peer(extra)  # refused at once, not queued
        held[0].sendall(b"GET /hello/ HTTP/1.1\r\nHost: x\r\n\r\n")  # a held one is served
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200 OK")
        held.pop().close()
        wait_for(lambda: "mycelium_edge_connections 4" in metrics(edge, held))
        status, _, _ = request(edge, "GET", "/hello/")  # room again: a new client is served
        assert status == 200
    finally:
        for s in held:
            s.close()


@pytest.mark.timeout(30)
def test_max_connections_bounds_each_worker_process(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]), max_connections=3, header_timeout=30.0, workers=2)
    socks = [socket.create_connection(("127.0.0.1", edge.port), timeout=10) for _ in range(16)]
    try:
        served = 0
        for s in socks:  # the kernel spread them over both workers; each holds 3 at most
            s.sendall(b"GET /hello/ HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):  # refused at once
                served += s.recv(65536).startswith(b"HTTP/1.1 200 OK")
        assert 3 <= served <= 2 * 3
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: request(edge, "GET", "/hello/")[0] == 200)  # room again once closed


def metrics(edge, held: list[socket.socket]) -> str:  # type: ignore[no-untyped-def]
    """The edge's metrics, asked on a connection already held (the edge may be full)."""
    s = held[0]
    s.sendall(b"GET /_mycelium/metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"mycelium_edge_connections_refused_total" not in data:
        chunk = s.recv(65536)
        assert chunk, "edge closed the metrics connection"
        data += chunk
    return data.decode()


@pytest.mark.timeout(30)
def test_a_connection_that_sends_nothing_is_closed_after_header_timeout(edges):
    edge = edges(table(), header_timeout=0.5, keepalive_timeout=60.0)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", edge.port), timeout=20) as s:
        assert closed_by_peer(s)
    assert time.monotonic() - started >= 0.5


@pytest.mark.timeout(60)
def test_slowloris_clients_are_timed_out_while_another_client_is_served(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]), header_timeout=1.0)
    socks = [socket.create_connection(("127.0.0.1", edge.port), timeout=20)
             for _ in range(300)]
    closed: set[int] = set()
    stop = threading.Event()

    def trickle() -> None:  # one header byte per connection per second, until each is cut
        line = b"GET /hello/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        i = 0
        while not stop.is_set() and len(closed) < len(socks):
            for n, s in enumerate(socks):
                if n not in closed:
                    try:
                        s.sendall(line[i:i + 1] if i < len(line) else b"a")
                    except OSError:
                        closed.add(n)
            i += 1
            stop.wait(1.0)

    def watch(n: int, s: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while s.recv(65536):
                pass
        closed.add(n)

    feeder = threading.Thread(target=trickle)
    feeder.start()
    watchers = [threading.Thread(target=watch, args=(n, s)) for n, s in enumerate(socks)]
    for w in watchers:
        w.start()
    try:
        status, _, body = request(edge, "GET", "/hello/")  # meanwhile, a good client is served
        assert status == 200, body
        wait_for(lambda: len(closed) == len(socks), timeout=30.0)
    finally:
        stop.set()
        feeder.join(10)
        for s in socks:
            s.close()
        for w in watchers:
            w.join(10)
