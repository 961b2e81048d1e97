"""Strict framing through a real edge: raw client sockets against a recording upstream.

Every refused shape must never reach the upstream; every accepted chunked body must reach it
in the edge's own framing, not the client's bytes.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from tests.edge.edge_helpers import Listener, raw_exchange, table

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Recorder:
    """A socket upstream that records every byte of each request it completes, then says ok."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.threads: list[threading.Thread] = []
        self.listener = Listener(self._accepted)
        self.url = f"http://127.0.0.1:{self.listener.port}"

    def _accepted(self, conn: socket.socket) -> None:
        t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
        t.start()
        self.threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        data = b""
        with conn, contextlib.suppress(OSError):
            while not self._complete(data):
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            self.seen.append(data)
            conn.sendall(_OK)

    @staticmethod
    def _complete(data: bytes) -> bool:
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            return False
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            return (body.startswith(b"0\r\n") or b"\r\n0\r\n" in body) and \
                body.endswith(b"\r\n\r\n")
        if b"content-length:" in lower:
            want = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            return len(body) >= want
        return True

    def stop(self) -> None:
        self.listener.close()
        for t in self.threads:
            t.join(5)


def _head(block: bytes) -> bytes:
    return b"POST /rec/x HTTP/1.1\r\nHost: a\r\n" + block + b"\r\n\r\n"


@pytest.fixture
def rec_edge(edges):
    rec = Recorder()
    edge = edges(table(rec=[rec.url]))
    yield rec, edge
    rec.stop()


@pytest.mark.parametrize(("request_bytes", "status"), [
    (_head(b"Transfer-Encoding: chunked") + b" 5\r\nhello\r\n0\r\n\r\n", 400),
    (_head(b"Transfer-Encoding: chunked") + b"5 \r\nhello\r\n0\r\n\r\n", 400),
    (_head(b"Transfer-Encoding: chunked") + b"5\t;a\r\nhello\r\n0\r\n\r\n", 400),
    (_head(b"Transfer-Encoding: chunked") + b"5z\r\nhello\r\n0\r\n\r\n", 400),
    (_head(b"Transfer-Encoding: chunked") + b"5;a\x00\r\nhello\r\n0\r\n\r\n", 400),
    (_head(b"Transfer-Encoding: chunked") + b"5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
    (_head(b"Transfer-Encoding: chunked") + b"5;a\nb\r\nhello\r\n0\r\n\r\n", 400),
    (_head(b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\nX-T: a\x00\r\n\r\n", 400),
    (_head(b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\nX-T: a\nX: b\r\n\r\n", 400),
    (_head(b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\nX-T : a\r\n\r\n", 400),
    (_head(b"Transfer-Encoding: gzip, chunked") + b"5\r\nhello\r\n0\r\n\r\n", 501),
    (_head(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked") + b"0\r\n\r\n", 501),
    (_head(b"Content-Length: 3, 4") + b"abcd", 400),
    (b"GET /rec/x HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
])
def test_refused_shapes_never_reach_the_upstream(rec_edge, request_bytes, status):
    rec, edge = rec_edge
    out = raw_exchange(edge.port, request_bytes)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    assert b"X-Mycelium-Edge: edge-test" in out
    # The body pump may have connected already (a chunked body streams while it is checked),
    # but no request the edge refused may have been completed upstream.
    assert not any(b"\r\n0\r\n" in s or s.endswith(b"abcd") for s in rec.seen), rec.seen


def test_chunked_bodies_are_reframed_with_trailers_filtered(rec_edge):
    rec, edge = rec_edge
    body = (b"5;name=value;q=\"a b\"\r\nhello\r\n00006\r\n world\r\n"
            b"0;last\r\nX-Checksum: 1\r\nContent-Length: 99\r\n\r\n")
    out = raw_exchange(edge.port, _head(b"Transfer-Encoding: chunked\r\nConnection: close")
                       + body)
    assert out.startswith(b"HTTP/1.1 200 "), out
    (seen,) = rec.seen
    head, _, framed = seen.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert framed == b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n"


def test_identical_lengths_reach_the_upstream_as_one(rec_edge):
    rec, edge = rec_edge
    out = raw_exchange(edge.port, _head(b"Content-Length: 3, 3\r\nConnection: close") + b"abc")
    assert out.startswith(b"HTTP/1.1 200 "), out
    (seen,) = rec.seen
    head = seen.partition(b"\r\n\r\n")[0].lower()
    assert head.count(b"content-length") == 1 and b"content-length: 3\r\n" in head + b"\r\n"
    assert seen.endswith(b"abc")


def test_http10_without_host_is_still_served(rec_edge):
    rec, edge = rec_edge
    out = raw_exchange(edge.port, b"GET /rec/x HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 "), out
    assert len(rec.seen) == 1
