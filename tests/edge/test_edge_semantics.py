"""The edge's semantics (docs/reference.md#edge) against real upstreams.

Paths, headers, hop-by-hop, error codes.
"""

from __future__ import annotations

import json
import socket

import pytest
from aiohttp import web
from edge_helpers import connect, dead_url, echo_app, raw_exchange, request, table


@pytest.fixture(params=["plain", "tls"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every test here runs over plain HTTP and over TLS."""
    return str(request.param)



def seen_headers(body: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in json.loads(body)["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def test_path_query_and_methods_reach_the_upstream_rewritten(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]))
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, headers, body = request(edge, method, "/hello/a/b?x=1&y=%20z", body=b"abc")
        assert status == 200, body
        seen = json.loads(body)
        assert (seen["method"], seen["target"], seen["body_len"]) == (method, "/a/b?x=1&y=%20z", 3)
        assert headers["X-Mycelium-Edge"] == "edge-test"
    assert json.loads(request(edge, "GET", "/hello")[2])["target"] == "/"
    assert json.loads(request(edge, "GET", "/hello?q=1")[2])["target"] == "/?q=1"
    status, headers, body = request(edge, "HEAD", "/hello/x")
    assert (status, body) == (200, b"")


def test_forwarded_headers_are_set_and_appended(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]))
    _, _, body = request(edge, "GET", "/hello/", headers={"Host": "shop.example:8080"})
    seen = seen_headers(body)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-host"] == ["shop.example:8080"]
    assert seen["x-forwarded-proto"] == ["https" if edge.tls_port else "http"]
    _, _, body = request(edge, "GET", "/hello/", headers={"X-Forwarded-For": "10.1.2.3",
                                                        "X-Forwarded-Proto": "https"})
    seen = seen_headers(body)
    assert seen["x-forwarded-for"] == ["10.1.2.3, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https" if edge.tls_port else "http"]


def test_hop_by_hop_request_headers_are_stripped_and_cannot_strip_forwarded_ones(upstreams,
                                                                                 edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]))
    raw = (b"GET /hello/h HTTP/1.1\r\nHost: h.example\r\n"
           b"Connection: keep-alive, X-Secret, X-Forwarded-For, X-Forwarded-Host, "
           b"X-Forwarded-Proto\r\n"
           b"X-Secret: s3cret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"
           b"TE: trailers\r\nUpgrade: websocket\r\nX-Kept: yes\r\n\r\n")
    with connect(edge, timeout=5) as s:
        s.sendall(raw)
        data = b""
        while b"}" not in data:
            chunk = s.recv(65536)
            assert chunk
            data += chunk
    seen = seen_headers(data.split(b"\r\n\r\n", 1)[1])
    for name in ("connection", "x-secret", "keep-alive", "proxy-connection", "te", "upgrade"):
        assert name not in seen, name
    assert seen["x-kept"] == ["yes"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-host"] == ["h.example"]
    assert seen["x-forwarded-proto"] == ["https" if edge.tls_port else "http"]


def test_hop_by_hop_response_headers_are_stripped(raw_upstreams, edges):
    def answer(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 201 Created\r\nConnection: X-Internal\r\nX-Internal: secret\r\n"
                     b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"
                     b"Upgrade: h2c\r\nX-Mycelium-Edge: forged\r\nX-Kept: yes\r\n"
                     b"Content-Length: 2\r\n\r\nok")

    up = raw_upstreams(answer)
    edge = edges(table(hello=[up.url]))
    status, headers, body = request(edge, "GET", "/hello/")
    assert (status, body) == (201, b"ok")
    assert headers["X-Kept"] == "yes"
    assert headers.get_all("X-Mycelium-Edge") == ["edge-test"]
    for name in ("X-Internal", "Keep-Alive", "Proxy-Connection", "Upgrade"):
        assert name not in headers, name


def test_edge_errors_are_json_with_the_edge_header(edges):
    edge = edges(table(empty=[]))
    for path, code in (("/nope/x", 404), ("/empty/x", 503), ("/Bad_Name/x", 400),
                       ("/_mycelium/nothing", 404)):
        status, headers, body = request(edge, "GET", path)
        assert status == code, path
        assert headers["X-Mycelium-Edge"] == "edge-test"
        assert headers["Content-Type"] == "application/json"
        assert set(json.loads(body)) == {"error"}


def test_refusing_upstreams_give_502_after_trying_each(edges):
    edge = edges(table(hello=[dead_url(), dead_url()]))
    status, headers, body = request(edge, "GET", "/hello/")
    assert status == 502
    assert "error" in json.loads(body)
    assert headers["X-Mycelium-Edge"] == "edge-test"


def test_health_and_keepalive_on_one_connection(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]))
    reqs = b"GET /_mycelium/health HTTP/1.1\r\nHost: x\r\n\r\n" * 2 + \
        b"GET /hello/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_exchange(edge, reqs)
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.count(b"X-Mycelium-Edge: edge-test") == 3


def test_http10_clients_get_close_or_keep_alive_and_dechunked_bodies(upstreams, edges):
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"abc")
        await resp.write(b"def")
        await resp.write_eof()
        return resp

    up = upstreams(echo_app(chunked=chunked))
    edge = edges(table(hello=[up.url]))
    request(edge, "GET", "/hello/warm")  # the next requests take the fast path
    out = raw_exchange(edge, b"GET /hello/x HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in out
    out = raw_exchange(edge, b"GET /hello/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                  b"GET /hello/chunked HTTP/1.0\r\n\r\n")
    first, second = out.split(b"HTTP/1.1 200 OK")[1:]
    assert b"Connection: keep-alive" in first
    head, body = second.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding" not in head and body == b"abcdef"
