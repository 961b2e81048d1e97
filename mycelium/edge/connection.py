"""One client connection: buffered, driven by callbacks, or by a task for slow requests.

The connection knows its handler only through :class:`ConnectionHandler`, so it depends on
no part of the proxy (the fast path implements it; tests may drive a connection with another).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from mycelium.edge.http1 import RequestHead
from mycelium.edge.routes import Endpoint
from mycelium.edge.upstream import Upstream
from mycelium.edge.wire import Conduit

__all__ = ["ClientConnection", "ConnectionHandler", "Exchange"]


class Exchange:
    """A request on the fast path: sent on a pooled connection, answered from callbacks."""

    __slots__ = ("app", "deadline", "ep", "order", "prefix", "req", "started", "up")

    def __init__(self, req: RequestHead, app: str, order: Sequence[Endpoint], ep: Endpoint,
                 up: Upstream, started: float, deadline: float, prefix: bytes = b"") -> None:
        self.req = req
        self.app = app
        self.order = order
        self.ep = ep
        self.up = up
        self.started = started
        self.deadline = deadline
        self.prefix = prefix
        """``/APP`` when routed by path prefix; empty when routed by host."""


class ConnectionHandler(Protocol):
    """What a client connection calls on the loop, from its protocol callbacks."""

    def opened(self, client: ClientConnection) -> None:
        """A client connected."""

    def dispatch(self, client: ClientConnection) -> None:
        """Bytes or EOF arrived while nobody works on ``client``, or a task handed it back."""

    def lost(self, client: ClientConnection) -> None:
        """The client is gone; ``client.exchange`` (if any) must be let go."""


class ClientConnection(Conduit):
    """A client connection.

    Between requests it is driven by callbacks (:meth:`ConnectionHandler.dispatch`); a request
    that the callbacks cannot finish runs in a task (``task``) that hands back when done.

    Args:
        loop: The loop the connection runs on.
        handler: Who handles its requests.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: ConnectionHandler) -> None:
        super().__init__(loop)
        self.handler = handler
        self.task: asyncio.Task[None] | None = None
        self.exchange: Exchange | None = None
        self.upstream: Upstream | None = None  # in use by the current slow request
        self.pump: asyncio.Task[None] | None = None
        self.peer = ""
        self.tls = False
        """Whether the client came over TLS (upstreams then see ``X-Forwarded-Proto: https``)."""
        self.last_active = loop.time()
        self.head_started = 0.0
        # what the slow path's current request was answered with, for the access log
        self.status = 0
        self.sent_bytes = 0
        self.routed_app: str | None = None
        self.instance: str | None = None
        self.retries = 0
        self.sent_head: tuple[RequestHead, str, bytes, bytes] | None = None
        """The fast path's last upstream request head, for which request, target and prefix
        (a keep-alive client repeats its request, so the head is built once)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection; requests are dispatched as bytes arrive."""
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "unknown"
        self.tls = transport.get_extra_info("ssl_object") is not None
        self.handler.opened(self)

    def data_received(self, data: bytes) -> None:
        """Buffer; dispatch a request when nobody is working on this connection."""
        super().data_received(data)
        if self.task is None and self.exchange is None:
            self.handler.dispatch(self)

    def eof_received(self) -> bool:
        """Half-closed: a task sees ``eof``; an idle connection is closed."""
        keep_open = super().eof_received()
        if self.task is None and self.exchange is None:
            self.handler.dispatch(self)
        return keep_open and not self.tls  # TLS has no half-close: asyncio warns on True

    def resume(self) -> None:
        """A task finished its request: go back to callbacks (serves a pipelined request)."""
        self.last_active = self.loop.time()
        self.head_started = 0.0
        self.handler.dispatch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop working for a client that is gone."""
        super().connection_lost(exc)
        self.handler.lost(self)
        task = self.task
        if task is not None and not task.done():
            task.cancel()
