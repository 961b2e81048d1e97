"""Hardening: junk on the socket, oversize heads and bodies, slow clients, smuggling."""

from __future__ import annotations

import threading

import pytest
from edge_helpers import connect, raw_exchange, request, table


@pytest.fixture(params=["plain", "tls"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every test here runs over plain HTTP and over TLS."""
    return str(request.param)



def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:100]
    return int(reply[9:12])


@pytest.mark.parametrize("junk", [
    b"\x00\xff\xfe garbage\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /hello/ HTTP/9.9\r\n\r\n",
    b"GET /hello/ HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET /hello/ HTTP/1.1\r\nHost : x\r\n\r\n",
    b"GET /hello/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
    b"POST /hello/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"POST /hello/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /hello/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST /hello/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n",
    b"GET http://evil/ HTTP/1.1\r\n\r\n",
])
def test_junk_is_rejected_with_a_4xx_or_5xx_and_closed(upstreams, edges, junk):
    up = upstreams()
    edge = edges(table(hello=[up.url]))
    reply = raw_exchange(edge, junk)
    assert 400 <= status_of(reply) < 600
    assert b"X-Mycelium-Edge: edge-test" in reply
    assert request(edge, "GET", "/hello/")[0] == 200


@pytest.mark.timeout(20)
def test_junk_and_a_stalled_client_do_not_hurt_a_concurrent_good_request(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]))
    stalled = connect(edge, timeout=5)
    stalled.sendall(b"GET /hello/ HTTP/1.1\r\nHost: x\r\nX-Partial: ")  # never finishes
    junk = connect(edge, timeout=5)
    results: list[int] = []
    try:
        junk.sendall(bytes(range(256)) * 64)
        threads = [threading.Thread(target=lambda: results.append(
            request(edge, "GET", "/hello/ok")[0])) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == [200] * 4
    finally:
        stalled.close()
        junk.close()


def test_oversize_head_is_431(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]), max_header_bytes=4096)
    reply = raw_exchange(edge, b"GET /hello/ HTTP/1.1\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
    assert status_of(reply) == 431
    reply = raw_exchange(edge, b"GET /hello/ HTTP/1.1\r\nX-Big: " + b"a" * 8000)  # no end
    assert status_of(reply) == 431


def test_oversize_body_is_413_by_length_and_by_chunks(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]), max_body_bytes=1000)
    assert request(edge, "POST", "/hello/", body=b"x" * 1001)[0] == 413
    assert request(edge, "POST", "/hello/", body=b"x" * 1000)[0] == 200
    chunked = (b"POST /hello/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + (b"200\r\n" + b"y" * 512 + b"\r\n") * 2 + b"0\r\n\r\n")
    assert status_of(raw_exchange(edge, chunked)) == 413


@pytest.mark.timeout(20)
def test_slow_client_head_times_out_with_408(edges):
    edge = edges(header_timeout=0.3)
    reply = raw_exchange(edge, b"GET /hello/ HTTP/1.1\r\nHost: x\r\n", timeout=10)
    assert status_of(reply) == 408


@pytest.mark.timeout(20)
def test_slow_client_body_times_out_with_408(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]), body_timeout=0.3)
    reply = raw_exchange(edge, b"POST /hello/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                                    b"\r\nabc", timeout=10)
    assert status_of(reply) == 408


def test_expect_100_continue_is_answered_by_the_edge(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]))
    with connect(edge, timeout=5) as s:
        s.sendall(b"POST /hello/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        data = s.recv(100)
        assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"abc")
        while b'"body_len": 3' not in data:
            chunk = s.recv(65536)
            assert chunk
            data += chunk


@pytest.mark.timeout(20)
def test_idle_keepalive_connections_are_closed(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[up.url]), keepalive_timeout=0.3)
    with connect(edge, timeout=10) as s:
        s.sendall(b"GET /hello/ HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:  # read until the edge closes the idle connection (or the timeout fails us)
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")
