"""Retries, passive health, timeouts and resets against real (mis)behaving upstreams."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time

import pytest
from aiohttp import web
from edge_helpers import dead_url, echo_app, request, settled_metrics, table


def value(text: str, line_start: str) -> float:
    """A series' value in one metrics answer (0 when absent): one answer, as the edge's
    workers each show the others' counters as of their last share, 0.5 s apart at most."""
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_connect_failure_is_retried_on_the_next_endpoint_even_for_post(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[dead_url(), up.url]), max_fails=100)
    for method in ("GET", "POST"):
        for _ in range(2):  # round-robin starts on the dead endpoint at least once
            status, _, body = request(edge, method, "/hello/r", body=b"data")
            assert status == 200, body
            assert json.loads(body)["body_len"] == 4
    text = settled_metrics(edge, 'mycelium_edge_requests_total{app="hello",code="200"} 4')
    assert value(text, 'mycelium_edge_retries_total{app="hello"}') >= 2  # the same answer's


def test_post_is_never_retried_once_sent_but_get_is(raw_upstreams, edges):
    def hang_up(conn: socket.socket, head: bytes) -> None:
        conn.close()  # read the request, answer nothing

    good: list[bytes] = []

    def ok(conn: socket.socket, head: bytes) -> None:
        good.append(head)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    bad = raw_upstreams(hang_up)
    fine = raw_upstreams(ok)
    edge = edges(table(hello=[bad.url, fine.url]))
    status, _, body = request(edge, "POST", "/hello/pay", body=b"{}")  # first try: `bad`
    assert status == 502, body
    assert good == []
    assert len(bad.requests) == 1
    edge.set_routes(table(hello=[bad.url, fine.url], again=[bad.url, fine.url]))
    status, _, body = request(edge, "GET", "/again/read")  # first try: `bad` again
    assert (status, body) == (200, b"ok")  # an idempotent request is resent elsewhere
    assert len(bad.requests) == 2 and len(good) == 1


def test_passive_health_skips_a_refusing_endpoint(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[dead_url(), up.url]), max_fails=1, fail_timeout=30)
    for _ in range(10):
        assert request(edge, "GET", "/hello/")[0] == 200
    # one failure took the dead endpoint out; no request tried it again (passive health is
    # each worker process's own: one failure per worker at most)
    text = settled_metrics(edge, 'mycelium_edge_requests_total{app="hello",code="200"} 10')
    failures = value(text, 'mycelium_edge_upstream_failures_total{app="hello"}')
    assert 1 <= failures <= max(1, edge.config.workers)


@pytest.mark.timeout(20)
def test_upstream_timeout_gives_504(upstreams, edges):
    release = threading.Event()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return web.Response(text="late")

    up = upstreams(echo_app(slow=slow))
    edge = edges(table(hello=[up.url]), read_timeout=0.5)
    started = time.monotonic()
    status, headers, body = request(edge, "GET", "/hello/slow")
    release.set()
    assert status == 504
    assert time.monotonic() - started < 5
    assert headers["X-Mycelium-Edge"] == "edge-test"
    assert "error" in json.loads(body)


def test_upstream_reset_mid_response_cuts_the_client_off(raw_upstreams, edges):
    def half(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # RST

    up = raw_upstreams(half)
    edge = edges(table(hello=[up.url]))
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=5)
    try:
        conn.request("GET", "/hello/")
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            resp.read()
    finally:
        conn.close()
    # the edge is fine afterwards
    assert request(edge, "GET", "/_mycelium/health")[0] == 200


def test_upstream_reset_before_responding_gives_502(raw_upstreams, edges):
    def reset(conn: socket.socket, head: bytes) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    up = raw_upstreams(reset)
    edge = edges(table(hello=[up.url]))
    status, headers, _ = request(edge, "POST", "/hello/", body=b"x")
    assert status == 502
    assert headers["X-Mycelium-Edge"] == "edge-test"


def test_garbage_from_upstream_gives_502(raw_upstreams, edges):
    up = raw_upstreams(lambda conn, head: conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n"))
    edge = edges(table(hello=[up.url]))
    assert request(edge, "POST", "/hello/", body=b"x")[0] == 502
