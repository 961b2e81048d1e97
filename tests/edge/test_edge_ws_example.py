"""examples/ws-echo through the edge, driven by the README's few-line stdlib client."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.edge.edge_helpers import table
from tests.meshkit import free_port

WS_ECHO = Path(__file__).resolve().parents[2] / "examples" / "ws-echo" / "ws-echo"


def stdlib_ws_roundtrip(port: int, path: str, text: str) -> str:
    """The README's client: handshake, one masked text frame, read the echo."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
              f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    data, mask = text.encode(), os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(data)]) + mask
              + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
    first, n = s.recv(2)
    reply = b""
    while len(reply) < (n & 0x7F):
        reply += s.recv(n & 0x7F)
    s.sendall(bytes([0x88, 0x82]) + mask + bytes(b ^ mask[i % 4]
                                                  for i, b in enumerate(struct.pack("!H", 1000))))
    s.close()
    assert first == 0x81
    return reply.decode()


@pytest.fixture
def ws_echo():
    port = free_port()
    proc = subprocess.Popen([str(WS_ECHO)], env={**os.environ, "PORT": str(port)},
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, "ws-echo did not start"
                time.sleep(0.05)  # polls a condition with a deadline
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.stderr is not None
        proc.stderr.close()
        proc.wait(10)


def test_the_example_echoes_through_the_edge(ws_echo, edges):
    edge = edges(table(**{"ws-echo": [ws_echo]}))
    assert stdlib_ws_roundtrip(edge.port, "/ws-echo/ws", "hello, tunnel") == "hello, tunnel"


def test_the_example_echoes_big_messages_through_the_edge(ws_echo, edges):
    import asyncio

    import aiohttp

    edge = edges(table(**{"ws-echo": [ws_echo]}))

    async def run() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{edge.port}/ws-echo/ws", max_msg_size=0) as ws:
            for size in (1, 125, 126, 65535, 65536, 1 << 20):
                data = os.urandom(size)
                await ws.send_bytes(data)
                assert await ws.receive_bytes(timeout=10) == data
            await ws.ping(b"p")
            await ws.close()
    asyncio.run(run())
