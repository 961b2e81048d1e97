"""The fast path: a bodyless request on a pooled connection, answered from callbacks.

The first request to an endpoint opens a connection (slow path, in a task); later ones reuse it
on the fast path. These tests warm the pool first so the fast path is the one under test.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from aiohttp import web
from edge_helpers import echo_app, http_conn, raw_exchange, request, table

from mycelium.edge import EdgeConfig, EdgeServer


def test_pipelined_requests_are_answered_in_order(upstreams, edges):
    async def named(request: web.Request) -> web.Response:
        return web.Response(text=request.query["n"])

    up = upstreams(echo_app(named=named))
    edge = edges(table(hello=[up.url]))
    assert request(edge, "GET", "/hello/named?n=warm")[0] == 200
    reqs = b"".join(b"GET /hello/named?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    out = raw_exchange(edge.port, reqs + b"GET /hello/named?n=end HTTP/1.1\r\nHost: x\r\n"
                                         b"Connection: close\r\n\r\n")
    bodies = [part.split(b"\r\n\r\n", 1)[1][:3].rstrip(b"H") for part in
              out.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"0", b"1", b"2", b"3", b"4", b"end"]


def hang_up_on_second_request(conn: socket.socket, head: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    conn.close()  # a keep-alive connection the upstream drops just as it is reused


def test_a_dropped_pooled_connection_is_resent_for_get_but_not_for_post(raw_upstreams, edges):
    up = raw_upstreams(hang_up_on_second_request)
    edge = edges(table(hello=[up.url]))
    conn = http_conn(edge)  # one client connection: one worker process, one upstream pool

    def ask(method: str, path: str) -> tuple[int, str | None, bytes]:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.headers["X-Mycelium-Edge"], resp.read()

    try:
        assert ask("GET", "/hello/a")[::2] == (200, b"first")  # pools connection 1
        assert ask("GET", "/hello/b")[::2] == (200, b"first")  # dropped → resent on 2
        assert up.accepted == 2
        status, edge_id, _ = ask("POST", "/hello/c")  # on pooled 2, dropped: no resend
        assert status == 502 and edge_id == "edge-test"
        assert up.accepted == 2
    finally:
        conn.close()


@pytest.mark.timeout(20)
def test_fast_path_upstream_timeout_gives_504(upstreams, edges):
    release = threading.Event()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return web.Response(text="late")

    up = upstreams(echo_app(slow=slow))
    edge = edges(table(hello=[up.url]), read_timeout=0.5)
    assert request(edge, "GET", "/hello/warm")[0] == 200
    started = time.monotonic()
    status = request(edge, "GET", "/hello/slow")[0]
    release.set()
    assert status == 504 and time.monotonic() - started < 5
    assert request(edge, "GET", "/hello/after")[0] == 200


@pytest.mark.timeout(20)
def test_a_client_leaving_mid_exchange_does_not_hurt_the_edge(upstreams, edges):
    arrived, release = threading.Event(), threading.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return web.Response(text="late")

    up = upstreams(echo_app(slow=slow))
    edge = edges(table(hello=[up.url]))
    assert request(edge, "GET", "/hello/warm")[0] == 200
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as s:
        s.sendall(b"GET /hello/slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert arrived.wait(5)
    release.set()
    for _ in range(3):
        assert request(edge, "GET", "/hello/again")[0] == 200


@pytest.mark.timeout(20)
def test_drain_waits_for_a_fast_path_request(upstreams):
    arrived, release = threading.Event(), threading.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return web.Response(text="finished")

    up = upstreams(echo_app(slow=slow))
    edge = EdgeServer(EdgeConfig(port=0))
    edge.start()
    edge.set_routes(table(hello=[up.url]))
    assert request(edge, "GET", "/hello/warm")[0] == 200
    results: list[tuple[int, bytes]] = []
    client = threading.Thread(target=lambda: results.append(
        request(edge, "GET", "/hello/slow")[::2]))
    client.start()
    assert arrived.wait(5)
    stopper = threading.Thread(target=edge.stop, kwargs={"grace": 10.0})
    stopper.start()
    deadline = time.monotonic() + 5
    while edge.running and time.monotonic() < deadline:
        time.sleep(0.01)  # polls a condition with a deadline
    assert stopper.is_alive()
    release.set()
    client.join(5)
    stopper.join(5)
    assert results == [(200, b"finished")]


def test_streaming_and_big_responses_continue_from_the_fast_path(upstreams, edges):
    payload = b"0123456789abcdef" * 65536  # 1 MiB: never complete in one read

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=payload)

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(3):
            await resp.write(b"part%d;" % i)
        await resp.write_eof()
        return resp

    up = upstreams(echo_app(big=big, chunked=chunked))
    edge = edges(table(hello=[up.url]))
    assert request(edge, "GET", "/hello/warm")[0] == 200
    for _ in range(3):
        assert request(edge, "GET", "/hello/big")[::2] == (200, payload)
        assert request(edge, "GET", "/hello/chunked")[::2] == (200, b"part0;part1;part2;")
        assert request(edge, "HEAD", "/hello/big")[::2] == (200, b"")
