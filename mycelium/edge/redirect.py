"""The plain port's HTTPS redirect: a connection handler in front of the fast path.

With ``--https-redirect`` the plain listener's connections are handled by
:class:`RedirectingHandler`: when a complete request head names a host that some certificate
covers, it answers ``308`` to the ``https://`` URL itself (:func:`~mycelium.edge.tls.https_location`
decides); every other request (``/_mycelium/…``, hosts without a certificate, heads it cannot
parse) goes to the wrapped handler unchanged, which answers it as usual.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from mycelium.edge.connection import ClientConnection, ConnectionHandler
from mycelium.edge.http1 import ProtocolError, parse_request_head
from mycelium.edge.state import EdgeState

__all__ = ["RedirectingHandler"]


class RedirectingHandler:
    """Answers 308 for hosts with a certificate, hands the rest to ``inner``.

    Args:
        inner: The edge's usual handler (the fast path).
        state: The edge's state (edge id, metrics, access log).
        location: ``(host, target) -> Location`` or None (serve the request as is).
    """

    def __init__(self, inner: ConnectionHandler, state: EdgeState,
                 location: Callable[[str | None, str], str | None]) -> None:
        self._inner = inner
        self._state = state
        self._location = location

    def opened(self, client: ClientConnection) -> None:
        """A client connected."""
        self._inner.opened(client)

    def lost(self, client: ClientConnection) -> None:
        """The client is gone."""
        self._inner.lost(client)

    def dispatch(self, client: ClientConnection) -> None:
        """Redirect the next request if its host has a certificate, else pass it on."""
        buf = client.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0 or client.closed or self._state.draining:
            self._inner.dispatch(client)
            return
        try:
            req = parse_request_head(bytes(buf[:end]))
        except ProtocolError:
            self._inner.dispatch(client)  # it answers the error
            return
        host = req.host.decode("latin-1") if req.host is not None else None
        where = self._location(host, req.target)
        if where is None:
            self._inner.dispatch(client)
            return
        started = time.monotonic()
        head = (b"HTTP/1.1 308 Permanent Redirect\r\nLocation: " + where.encode("latin-1")
                + b"\r\nContent-Length: 0\r\n" + self._state.edge_line
                + b"Connection: close\r\n\r\n")
        client.status, client.sent_bytes, client.routed_app = 308, 0, None
        with contextlib.suppress(ConnectionError):
            client.write(head)
        self._state.metrics.request("", 308)
        self._state.log_access(client, req, started)
        client.close()  # a body, if any, is not read: the client resends it to https
