"""Streams that stay open: the body is bounded by stream_idle_timeout, not read_timeout."""

from __future__ import annotations

import asyncio
import http.client
import time

from aiohttp import web

from tests.edge.edge_helpers import echo_app, table


async def _sse(request: web.Request) -> web.StreamResponse:
    """An SSE-like stream: one event, a silence of ``quiet`` seconds, a second event."""
    quiet = float(request.query.get("quiet", "1.5"))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: one\n\n")
    await asyncio.sleep(quiet)  # the silence under test, not a synchronisation
    await resp.write(b"data: two\n\n")
    await resp.write_eof()
    return resp


def _read_stream(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        out = b""
        try:
            while chunk := resp.read1(65536):
                out += chunk
        except http.client.IncompleteRead as exc:
            out += exc.partial
        return out
    finally:
        conn.close()


def test_a_stream_silent_longer_than_read_timeout_survives(upstreams, edges):
    up = upstreams(echo_app(sse=_sse))
    edge = edges(table(app=[up.url]), read_timeout=0.3, stream_idle_timeout=30.0)
    assert _read_stream(edge.port, "/app/sse?quiet=1.2") == b"data: one\n\ndata: two\n\n"


def test_a_stream_silent_past_stream_idle_timeout_is_cut(upstreams, edges):
    up = upstreams(echo_app(sse=_sse))
    edge = edges(table(app=[up.url]), read_timeout=5.0, stream_idle_timeout=0.3)
    started = time.monotonic()
    out = _read_stream(edge.port, "/app/sse?quiet=15")
    assert out == b"data: one\n\n"
    assert time.monotonic() - started < 10  # cut by the idle bound, long before the upstream
