"""Bodies are streamed both ways, not buffered: timed chunks, 20 MB each way."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading

import pytest
from aiohttp import web
from edge_helpers import connect, echo_app, http_conn, table

BIG = 20 * 1024 * 1024

@pytest.fixture(params=["plain", "tls"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every test here runs over plain HTTP and over TLS."""
    return str(request.param)



def read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}; got {data[-200:]!r}"
        data += chunk
    return data


@pytest.mark.timeout(20)
def test_response_chunks_reach_the_client_before_the_upstream_finishes(upstreams, edges):
    go_on = threading.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first-chunk")
        await asyncio.get_running_loop().run_in_executor(None, go_on.wait, 10)
        await resp.write(b"second-chunk")
        await resp.write_eof()
        return resp

    up = upstreams(echo_app(stream=stream))
    edge = edges(table(hello=[up.url]))
    with connect(edge, timeout=10) as s:
        s.sendall(b"GET /hello/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_until(s, b"first-chunk")
        assert not go_on.is_set()  # the upstream is still blocked mid-response
        assert b"Transfer-Encoding: chunked" in data
        go_on.set()
        data = read_until(s, b"0\r\n\r\n", data)
        assert b"second-chunk" in data


@pytest.mark.timeout(20)
def test_request_chunks_reach_the_upstream_before_the_client_finishes(upstreams, edges):
    got_first = threading.Event()

    async def consume(request: web.Request) -> web.Response:
        first = await request.content.readany()
        got_first.set()
        rest = await request.read()
        return web.Response(text=f"{len(first) + len(rest)}")

    up = upstreams(echo_app(consume=consume))
    edge = edges(table(hello=[up.url]))
    with connect(edge, timeout=10) as s:
        s.sendall(b"POST /hello/consume HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"\r\n5\r\nhello\r\n")
        assert got_first.wait(5), "the first chunk did not reach the upstream"
        s.sendall(b"6\r\n world\r\n0\r\n\r\n")
        data = read_until(s, b"\r\n\r\n")
        head, body = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        while len(body) < 2:
            body += s.recv(100)
        assert body == b"11"


@pytest.mark.timeout(30)
def test_twenty_megabytes_each_way(upstreams, edges):
    payload = bytes(range(256)) * (BIG // 256)

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        async for chunk in request.content.iter_any():
            digest.update(chunk)
        return web.Response(text=digest.hexdigest())

    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = len(payload)
        await resp.prepare(request)
        for i in range(0, len(payload), 1 << 20):
            await resp.write(payload[i:i + (1 << 20)])
        return resp

    up = upstreams(echo_app(upload=upload, download=download))
    edge = edges(table(hello=[up.url]), max_body_bytes=64 * 1024 * 1024)
    conn = http_conn(edge, timeout=20)
    try:
        conn.request("POST", "/hello/upload", body=payload)
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read().decode() == hashlib.sha256(payload).hexdigest()
        conn.request("GET", "/hello/download")  # same keep-alive connection
        resp = conn.getresponse()
        assert resp.status == 200
        got = resp.read()
        assert len(got) == BIG and got == payload
    finally:
        conn.close()


@pytest.mark.timeout(30)
def test_chunked_upload_of_twenty_megabytes(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]), max_body_bytes=64 * 1024 * 1024)

    def chunks():
        block = b"z" * (1 << 20)
        for _ in range(20):
            yield block

    conn = http_conn(edge, timeout=20)
    try:
        conn.request("PUT", "/hello/blob", body=chunks(), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["body_len"] == BIG
    finally:
        conn.close()
