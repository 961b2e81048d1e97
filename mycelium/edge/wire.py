"""A lean buffered asyncio protocol, used for both sides of a proxied exchange.

Lighter than asyncio streams: the proxy reads the receive buffer (a ``bytearray``) in place,
waits only when it is empty, and gets back-pressure both ways — reading pauses when the buffer
grows past a high-water mark, and writers await :meth:`Conduit.drain` while the transport's
send buffer is full.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["Conduit"]

_HIGH_WATER = 256 * 1024


class Conduit(asyncio.Protocol):
    """One TCP connection: an input buffer, waiters, flow control.

    Attributes:
        buf: Bytes received and not yet consumed; consumers delete what they use.
        eof: The peer sent EOF or the connection is gone.
        closed: The connection is gone (``connection_lost`` ran).
        transport: The transport, once connected.
        watcher: Called with ``watched`` after each event (bytes, EOF, loss) while set: how
            a callback-driven consumer (the fast path) follows a connection without a task
            (one bound method for every connection, not a closure per request).
        watched: What ``watcher`` is called with.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buf = bytearray()
        self.eof = False
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drainer: asyncio.Future[None] | None = None
        self.must_drain = False
        """The send buffer is over its high-water mark: writers must await :meth:`drain`."""
        self._read_paused = False
        self.watcher: Callable[[Any], None] | None = None
        self.watched: Any = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (asyncio and uvloop both set TCP_NODELAY already)."""
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        """Buffer ``data``, wake a reader, pause reading past the high-water mark; then tell
        the watcher."""
        buf = self.buf
        buf += data
        if self._waiter is not None:
            self._wake()
        if len(buf) > _HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        watcher = self.watcher
        if watcher is not None:
            watcher(self.watched)

    def eof_received(self) -> bool:
        """Note the half-close and keep the transport open for our writes."""
        self.eof = True
        self._wake()
        if self.watcher is not None:
            self.watcher(self.watched)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark the connection gone and wake every waiter."""
        self.eof = True
        self.closed = True
        self._wake()
        drainer = self._drainer
        if drainer is not None:
            self._drainer = None
            if not drainer.done():
                drainer.set_result(None)
        if self.watcher is not None:
            self.watcher(self.watched)

    def pause_writing(self) -> None:
        """The transport's send buffer is full: writers must await :meth:`drain`."""
        self.must_drain = True

    def resume_writing(self) -> None:
        """The send buffer drained: release a waiting writer."""
        self.must_drain = False
        drainer = self._drainer
        if drainer is not None:
            self._drainer = None
            if not drainer.done():
                drainer.set_result(None)

    # -- for the proxy ------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def consumed(self) -> None:
        """Tell the conduit the consumer took bytes from ``buf`` (may resume reading)."""
        if self._read_paused and len(self.buf) < _HIGH_WATER // 2 and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    async def wait_data(self, timeout: float) -> None:
        """Wait until ``buf`` is not empty or EOF was seen.

        Raises:
            TimeoutError: Nothing arrived within ``timeout`` seconds.
        """
        if self.buf or self.eof:
            return
        await self.wait_more(timeout)

    async def wait_more(self, timeout: float) -> None:
        """Wait for bytes beyond those in ``buf`` (an incomplete unit is buffered), or EOF.

        Raises:
            TimeoutError: Nothing arrived within ``timeout`` seconds.
        """
        if self.eof:
            return
        self.consumed()
        waiter = self.loop.create_future()
        self._waiter = waiter
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if self._waiter is waiter:
                self._waiter = None

    def write(self, data: bytes | bytearray) -> None:
        """Queue ``data`` for sending (never blocks; see :meth:`drain`).

        Raises:
            ConnectionResetError: The connection is gone.
        """
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("connection closed")
        transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait until the send buffer is below its low-water mark.

        Raises:
            TimeoutError: The peer did not read for ``timeout`` seconds.
            ConnectionResetError: The connection is gone.
        """
        if self.must_drain and not self.closed:
            drainer = self.loop.create_future()
            self._drainer = drainer
            timer = self.loop.call_later(timeout, _expire, drainer)
            try:
                await drainer
            finally:
                timer.cancel()
        if self.closed:
            raise ConnectionResetError("connection closed")

    def close(self) -> None:
        """Close after sending what is queued."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (RST), discarding queued bytes."""
        if self.transport is not None:
            self.transport.abort()


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())
