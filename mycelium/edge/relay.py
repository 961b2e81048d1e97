"""Streaming bodies through the edge, both ways, with back-pressure and no full buffering.

A request body is pumped client → upstream by its own task while the response is read, so an
upstream that answers while it reads (or answers early) never deadlocks the exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from mycelium.edge.chunked import ChunkedReader
from mycelium.edge.config import EdgeConfig
from mycelium.edge.http1 import ProtocolError, RequestHead, ResponseHead
from mycelium.edge.upstream import Upstream, UpstreamPool
from mycelium.edge.wire import Conduit

__all__ = ["ClientBodyError", "abort_on_error", "client_fault", "error_of", "pump_body",
           "relay_response", "response_head", "settle"]

_DROP_RESPONSE = frozenset({b"x-mycelium-edge"})


class ClientBodyError(Exception):
    """The client, not the upstream, spoiled the request body.

    Attributes:
        status: What to answer (400 malformed, 408 too slow, 413 too large), or ``None`` when
            the client is gone and there is no one to answer.
    """

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


async def _more_body(client: Conduit, timeout: float) -> None:
    """Wait for more request body bytes.

    Raises:
        ClientBodyError: The client closed (no status) or went silent (408).
    """
    if client.eof:
        raise ClientBodyError("client closed mid-body", None)
    try:
        await client.wait_more(timeout)
    except TimeoutError:
        raise ClientBodyError("request body too slow", 408) from None


async def pump_body(client: Conduit, up: Upstream, req: RequestHead, cfg: EdgeConfig) -> None:
    """Stream the request body from the client to the upstream.

    Raises:
        ClientBodyError: The client's fault: malformed chunking, too large, too slow, gone.
        ConnectionError: The upstream went away (an upstream failure).
        TimeoutError: The upstream stopped reading for ``send_timeout`` seconds.
    """
    buf = client.buf
    limit = cfg.max_body_bytes
    if req.chunked:
        reader = ChunkedReader()
        while True:
            try:
                data = reader.feed(buf)
            except ProtocolError as exc:
                raise ClientBodyError(str(exc), 400) from None
            fed = len(buf)  # the rest cannot be used without more bytes
            client.consumed()
            if limit is not None and reader.total > limit:
                raise ClientBodyError("request body too large", 413)
            if data:
                up.write(data)
                if up.must_drain:
                    await up.drain(cfg.send_timeout)
            if reader.done:
                return
            if len(buf) == fed:  # nothing new arrived while we wrote
                await _more_body(client, cfg.body_timeout)
    remaining = req.content_length or 0
    while remaining:
        if not buf:
            await _more_body(client, cfg.body_timeout)
            continue
        take = min(remaining, len(buf))
        up.write(bytes(buf[:take]) if take < len(buf) else bytes(buf))
        del buf[:take]
        client.consumed()
        remaining -= take
        if up.must_drain:
            await up.drain(cfg.send_timeout)


def response_head(req: RequestHead, resp: ResponseHead, edge_line: bytes,
                  keep: bool, relocate: tuple[bytes, bytes] | None = None
                  ) -> tuple[bytes, bool, bool]:
    """Build the response head for the client from the upstream's.

    Args:
        req: The client's request (HEAD and HTTP/1.0 change the framing).
        resp: The upstream's response head.
        edge_line: The ``X-Mycelium-Edge`` header line.
        keep: Whether the edge wants to keep the client connection.
        relocate: ``(prefix, upstream host:port)`` when the app is reached under a path
            prefix: redirects that escape it are rewritten under it.

    Returns:
        ``(head bytes, keep, dechunk)``: ``keep`` turns false when the body is delimited by
        close; ``dechunk`` when a chunked body must be decoded for an HTTP/1.0 client.
    """
    dechunk = False
    if req.method == "HEAD" or resp.status in (204, 304):
        framing = b""
    elif resp.chunked:
        if req.minor == 1:
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            framing, dechunk, keep = b"", True, False
    elif resp.content_length is not None:
        framing = b""  # the Content-Length line is end-to-end and already kept
    else:
        framing, keep = b"", False  # body delimited by the upstream closing
    if not keep:
        framing += b"Connection: close\r\n"
    elif req.minor == 0:
        framing += b"Connection: keep-alive\r\n"
    head = b"".join((b"HTTP/1.1", resp.status_line[8:], b"\r\n",
                     resp.forward_block(_DROP_RESPONSE, relocate), edge_line, framing, b"\r\n"))
    return head, keep, dechunk


async def relay_response(client: Conduit, req: RequestHead, up: Upstream, resp: ResponseHead,
                         pump: asyncio.Task[None] | None, cfg: EdgeConfig, edge_line: bytes,
                         keep: bool, pool: UpstreamPool,
                         relocate: tuple[bytes, bytes] | None = None) -> tuple[bool, int]:
    """Send the response head and stream the body to the client; pool the upstream.

    Args:
        client: The client connection.
        req: The client's request head (method and HTTP version matter).
        up: The upstream connection the response comes from.
        resp: The upstream's response head, already read.
        pump: The task still streaming the request body, if any.
        cfg: Timeouts.
        edge_line: The ``X-Mycelium-Edge`` header line.
        keep: Whether the client connection may stay open, as far as the edge is concerned.
        pool: Where a still-healthy upstream connection goes back.
        relocate: See :func:`response_head`.

    Returns:
        Whether the client connection may carry another request, and how many body bytes
        were handed to the client (for the access log; a cut-off answer counts what went).
    """
    head, keep, dechunk = response_head(req, resp, edge_line, keep, relocate)
    sent = 0
    bodyless = req.method == "HEAD" or resp.status in (204, 304)
    ubuf = up.buf
    complete = True
    try:
        if bodyless:
            client.write(head)
        elif resp.chunked:
            reader = ChunkedReader(decode=dechunk)
            data = reader.feed(ubuf)
            fed = len(ubuf)  # what is left after a feed cannot be used without more bytes
            client.write(head + data if data else head)
            sent += len(data)
            while not reader.done:
                if client.must_drain:
                    await client.drain(cfg.send_timeout)
                if len(ubuf) == fed:  # nothing new arrived (e.g. while draining)
                    if up.eof:
                        raise ConnectionResetError("upstream closed mid-body")
                    await up.wait_more(cfg.stream_idle_timeout)
                data = reader.feed(ubuf)
                fed = len(ubuf)
                up.consumed()
                if data:
                    client.write(data)
                    sent += len(data)
        elif resp.content_length is not None:
            remaining = resp.content_length
            take = min(remaining, len(ubuf))
            if take:
                client.write(head + ubuf[:take])
                del ubuf[:take]
                remaining -= take
                sent += take
            else:
                client.write(head)
            while remaining:
                if client.must_drain:
                    await client.drain(cfg.send_timeout)
                if not ubuf:
                    if up.eof:
                        raise ConnectionResetError("upstream closed mid-body")
                    await up.wait_data(cfg.stream_idle_timeout)
                    continue
                take = min(remaining, len(ubuf))
                client.write(bytes(ubuf[:take]) if take < len(ubuf) else bytes(ubuf))
                del ubuf[:take]
                up.consumed()
                remaining -= take
                sent += take
        else:
            client.write(head + ubuf if ubuf else head)
            sent += len(ubuf)
            ubuf.clear()
            while not up.eof:
                if client.must_drain:
                    await client.drain(cfg.send_timeout)
                await up.wait_data(cfg.stream_idle_timeout)
                if ubuf:
                    client.write(bytes(ubuf))
                    sent += len(ubuf)
                    ubuf.clear()
                    up.consumed()
            complete = False  # the upstream closed: nothing to pool
        if client.must_drain:
            await client.drain(cfg.send_timeout)
    except (ConnectionError, TimeoutError, ProtocolError):
        up.abort()
        client.abort()
        if pump is not None:
            pump.cancel()
        return False, sent
    if pump is not None and not pump.done():
        # The upstream answered before reading the whole body: neither side is reusable.
        pump.cancel()
        up.abort()
        return False, sent
    if pump is not None and error_of(pump) is not None:
        up.abort()
        return False, sent
    if complete and resp.keep_alive and not up.eof and not ubuf:
        pool.release(up)
    else:
        up.close()
    return keep, sent


def abort_on_error(up: Upstream) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback: a failed body pump aborts the upstream, waking the response reader."""
    def callback(task: asyncio.Task[None]) -> None:
        if error_of(task) is not None:
            up.abort()
    return callback


def error_of(task: asyncio.Task[None]) -> BaseException | None:
    """The exception a finished task raised (not cancellation); ``None`` otherwise."""
    if not task.done() or task.cancelled():
        return None
    return task.exception()


def client_fault(task: asyncio.Task[None] | None) -> ClientBodyError | None:
    """The client's fault that ended a body pump, if that is how it ended."""
    if task is None:
        return None
    exc = error_of(task)
    return exc if isinstance(exc, ClientBodyError) else None


async def settle(task: asyncio.Task[None]) -> None:
    """Wait for ``task`` to finish without raising its exception here."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        await task
