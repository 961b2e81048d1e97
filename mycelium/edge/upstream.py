"""Upstream connections: a keep-alive pool per endpoint, and reading response heads.

Reusing connections is most of the edge's speed: a new TCP connection per request costs a
connect and a slow-start, and leaves TIME_WAIT sockets behind.
"""

from __future__ import annotations

import asyncio

from mycelium.edge.http1 import ProtocolError, ResponseHead, parse_response_head
from mycelium.edge.routes import Endpoint
from mycelium.edge.wire import Conduit

__all__ = ["Upstream", "UpstreamPool", "read_response_head"]

MAX_RESPONSE_HEAD = 64 * 1024


class Upstream(Conduit):
    """A connection to one endpoint; ``reused`` once it served a request before.

    The fast path follows it through its ``watcher`` while it waits for a response.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int]) -> None:
        super().__init__(loop)
        self.key = key
        self.reused = False


class UpstreamPool:
    """Idle keep-alive connections by endpoint, most recently used first.

    Args:
        loop: The edge's loop.
        keepalive: Idle connections kept per endpoint.
        connect_timeout: Seconds a new connection may take.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, keepalive: int,
                 connect_timeout: float) -> None:
        self.loop = loop
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self._pool: dict[tuple[str, int], list[Upstream]] = {}

    def take_idle(self, ep: Endpoint) -> Upstream | None:
        """Take a live idle connection to ``ep`` without waiting, or ``None``."""
        conns = self._pool.get((ep.host, ep.port))
        while conns:
            up = conns.pop()
            if up.closed or up.eof or up.buf:
                up.abort()
                continue
            return up
        return None

    async def acquire(self, ep: Endpoint) -> Upstream:
        """Take a pooled connection to ``ep`` or open a new one.

        Raises:
            OSError: The connection failed.
            TimeoutError: It did not open within ``connect_timeout``.
        """
        up = self.take_idle(ep)
        if up is not None:
            return up
        key = (ep.host, ep.port)
        _, proto = await asyncio.wait_for(
            self.loop.create_connection(lambda: Upstream(self.loop, key), ep.host, ep.port),
            self.connect_timeout)
        return proto

    def release(self, up: Upstream, draining: bool = False) -> None:
        """Return a healthy upstream connection to the pool (or close it)."""
        conns = self._pool.get(up.key)
        if conns is None:
            conns = self._pool[up.key] = []
        if draining or len(conns) >= self.keepalive:
            up.close()
            return
        up.reused = True
        conns.append(up)

    def prune(self, keep: set[tuple[str, int]]) -> None:
        """Close the idle connections of endpoints not in ``keep``."""
        for key in [k for k in self._pool if k not in keep]:
            for up in self._pool.pop(key):
                up.close()

    def close_all(self) -> None:
        """Drop every idle connection."""
        for conns in self._pool.values():
            for up in conns:
                up.abort()
        self._pool.clear()


async def read_response_head(up: Upstream, read_timeout: float,
                             switch: bool = False) -> ResponseHead:
    """Read the upstream's final response head (skipping 1xx interim responses).

    A 101 is a final answer only when ``switch`` (the edge asked the upstream to upgrade);
    otherwise it is a protocol error (RFC 9110 §15.2.2: never sent unasked).

    Raises:
        TimeoutError: ``read_timeout`` passed in silence.
        ConnectionResetError: The upstream closed before a full head.
        ProtocolError: The upstream sent garbage.
    """
    buf = up.buf
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_RESPONSE_HEAD:
                raise ProtocolError("upstream response head too large")
            if up.eof:
                raise ConnectionResetError("upstream closed before responding")
            await up.wait_more(read_timeout)
            continue
        resp = parse_response_head(bytes(buf[:end]))
        del buf[:end + 4]
        if 100 <= resp.status < 200:
            if resp.status == 101:
                if switch:
                    return resp
                raise ProtocolError("upstream switched protocols unasked")
            continue
        return resp
