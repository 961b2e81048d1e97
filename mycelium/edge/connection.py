"""One client connection: buffered, driven by callbacks, or by a task for slow requests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mycelium.edge.http1 import RequestHead
from mycelium.edge.routes import Endpoint
from mycelium.edge.upstream import Upstream
from mycelium.edge.wire import Conduit

if TYPE_CHECKING:
    from mycelium.edge.proxy import EdgeProxy

__all__ = ["ClientConnection", "Exchange"]


class Exchange:
    """A request on the fast path: sent on a pooled connection, answered from callbacks."""

    __slots__ = ("app", "deadline", "ep", "order", "req", "started", "up")

    def __init__(self, req: RequestHead, app: str, order: Sequence[Endpoint], ep: Endpoint,
                 up: Upstream, started: float, deadline: float) -> None:
        self.req = req
        self.app = app
        self.order = order
        self.ep = ep
        self.up = up
        self.started = started
        self.deadline = deadline


class ClientConnection(Conduit):
    """A client connection.

    Between requests it is driven by callbacks (:meth:`EdgeProxy._dispatch`); a request that
    the fast path cannot finish runs in a task (``task``) that hands back when done.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, proxy: EdgeProxy) -> None:
        super().__init__(loop)
        self.proxy = proxy
        self.task: asyncio.Task[None] | None = None
        self.exchange: Exchange | None = None
        self.upstream: Upstream | None = None  # in use by the current slow request
        self.pump: asyncio.Task[None] | None = None
        self.peer = ""
        self.last_active = loop.time()
        self.head_started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection; requests are dispatched as bytes arrive."""
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "unknown"
        self.proxy.clients.add(self)

    def data_received(self, data: bytes) -> None:
        """Buffer; dispatch a request when nobody is working on this connection."""
        super().data_received(data)
        if self.task is None and self.exchange is None:
            self.proxy._dispatch(self)

    def eof_received(self) -> bool:
        """Half-closed: a task sees ``eof``; an idle connection is closed."""
        keep_open = super().eof_received()
        if self.task is None and self.exchange is None:
            self.proxy._dispatch(self)
        return keep_open

    def on_upstream(self) -> None:
        """The fast path's upstream got bytes or closed."""
        self.proxy._fast_response(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop working for a client that is gone."""
        super().connection_lost(exc)
        self.proxy.clients.discard(self)
        task = self.task
        if task is not None and not task.done():
            task.cancel()
        if self.exchange is not None:
            self.proxy._fast_detach(self, pool=False)
