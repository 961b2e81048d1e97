"""Upgrades through the edge: WebSockets byte-exact, h2c refused, smuggling shapes handled."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time

import aiohttp
import pytest
from aiohttp import web

from tests.edge.edge_helpers import echo_app, raw_exchange, request, table

_HANDSHAKE = (b"GET /ws/echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


class WsState:
    def __init__(self) -> None:
        self.closed = threading.Event()
        self.close_code: int | None = None


def ws_app(state: WsState) -> web.Application:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024, autoping=True)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        state.close_code = ws.close_code
        state.closed.set()
        return ws
    return echo_app(echo=echo)


def _wait(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture
def ws(upstreams, edges):
    state = WsState()
    up = upstreams(ws_app(state))

    def start(**config):
        return edges(table(ws=[up.url]), **config), up
    return state, start


def test_websocket_messages_are_byte_exact_with_ping_pong_and_close(ws):
    """Random sizes from 1 B to 1 MiB (300 here; bench/ingress.py sends 10,000)."""
    state, start = ws
    edge, _ = start()
    rng = random.Random(7)

    async def run() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{edge.port}/ws/echo", max_msg_size=4 * 1024 * 1024,
                autoping=False) as conn:
            assert conn._response.headers["X-Mycelium-Edge"] == "edge-test"
            for i in range(300):
                size = int(2 ** rng.uniform(0, 20))
                data = rng.randbytes(size)
                if i % 2:
                    await conn.send_bytes(data)
                    assert (await conn.receive_bytes(timeout=10)) == data
                else:
                    text = data.hex()[:size]
                    await conn.send_str(text)
                    assert (await conn.receive_str(timeout=10)) == text
            await conn.ping(b"are-you-there")
            msg = await conn.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"are-you-there"
            await conn.close(code=4001, message=b"bye")
    asyncio.run(run())
    assert state.closed.wait(10) and state.close_code == 4001


def _handshake(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(_HANDSHAKE)
    head = b""
    while b"\r\n\r\n" not in head:
        more = sock.recv(4096)
        assert more, head
        head += more
    return sock, head


def test_the_101_carries_the_edge_header_and_the_tunnel_is_a_gauge(ws):
    state, start = ws
    edge, _ = start()
    sock, head = _handshake(edge.port)
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"X-Mycelium-Edge: edge-test\r\n" in head
        assert b"Upgrade: websocket\r\n" in head and b"Connection: upgrade\r\n" in head
        assert _wait(lambda: 'mycelium_edge_tunnels{app="ws"} 1' in request(
            edge, "GET", "/_mycelium/metrics")[2].decode())  # workers share it every 0.5 s
    finally:
        sock.close()  # the client vanishes: the upstream side must close
    assert state.closed.wait(10)
    assert _wait(lambda: 'mycelium_edge_tunnels{app="ws"} 1' not in request(
        edge, "GET", "/_mycelium/metrics")[2].decode())  # 0, or no series once merged


def test_an_idle_tunnel_is_closed_after_tunnel_idle_timeout(ws):
    state, start = ws
    edge, _ = start(tunnel_idle_timeout=0.3)
    sock, head = _handshake(edge.port)
    with sock:
        assert head.startswith(b"HTTP/1.1 101 ")
        started = time.monotonic()
        assert sock.recv(4096) in (b"", b"\x88\x02\x03\xe8")  # closed (maybe a close frame)
        assert time.monotonic() - started < 8
    assert state.closed.wait(10)


def test_a_route_change_keeps_a_live_tunnel_and_a_drain_closes_it(ws, upstreams):
    state, start = ws
    edge, up = start(tunnel_drain_timeout=0.3)
    other = upstreams(echo_app())

    async def run() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{edge.port}/ws/echo") as conn:
            edge.set_routes(table(ws=[up.url, other.url], more=[other.url]))
            await conn.send_str("still here")
            assert await conn.receive_str(timeout=10) == "still here"
            edge.set_routes(table(ws=[other.url]))  # the instance drains
            msg = await conn.receive(timeout=10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.CLOSING)
    asyncio.run(run())
    assert state.closed.wait(10)


class Recorder:
    """A raw upstream that records each request head and answers ``answer``."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.heads: list[bytes] = []

    def __call__(self, conn: socket.socket, head: bytes) -> None:
        self.heads.append(head)
        conn.sendall(self.answer)


_PLAIN = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


@pytest.mark.parametrize("req", [
    # h2c is never tunnelled: Upgrade and HTTP2-Settings dropped, plain HTTP/1.1
    b"GET /r/ HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    # Connection: upgrade without an Upgrade field
    b"GET /r/ HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
    # Upgrade not named in Connection
    b"GET /r/ HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
    # an Upgrade request with a body: the upgrade is ignored, the body proxied as a body
    b"POST /r/ HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
    b"Content-Length: 4\r\n\r\nbody",
    # HTTP/1.0 cannot upgrade
    b"GET /r/ HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
])
def test_requests_that_may_not_upgrade_are_proxied_plain(raw_upstreams, edges, req):
    rec = Recorder(_PLAIN)
    up = raw_upstreams(rec)
    edge = edges(table(r=[up.url]))
    out = raw_exchange(edge.port, req, complete=lambda out: out.endswith(b"\r\n\r\nok"))
    assert out.startswith(b"HTTP/1.1 200 "), out
    (head,) = rec.heads
    lower = head.lower()
    assert b"upgrade" not in lower and b"http2-settings" not in lower, head


def test_a_101_nobody_asked_for_is_a_502(raw_upstreams, edges):
    rec = Recorder(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                   b"Upgrade: websocket\r\n\r\nSMUGGLED")
    up = raw_upstreams(rec)
    edge = edges(table(r=[up.url]))
    for req in (b"GET /r/ HTTP/1.1\r\nHost: a\r\n\r\n",
                b"POST /r/ HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
                b"Content-Length: 4\r\n\r\nbody"):
        out = raw_exchange(edge.port, req)
        assert out.startswith(b"HTTP/1.1 502 "), out
        assert b"SMUGGLED" not in out


def test_a_101_to_another_protocol_is_a_502(raw_upstreams, edges):
    rec = Recorder(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                   b"Upgrade: h2c\r\n\r\nSMUGGLED")
    up = raw_upstreams(rec)
    edge = edges(table(r=[up.url]))
    out = raw_exchange(edge.port, _HANDSHAKE.replace(b"/ws/echo", b"/r/"))
    assert out.startswith(b"HTTP/1.1 502 "), out
    assert b"SMUGGLED" not in out
    assert b"upgrade: websocket" in rec.heads[0].lower()
