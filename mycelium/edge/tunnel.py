"""Upgraded connections (WebSockets): who may switch protocols, and the byte tunnel after.

``Upgrade`` is hop-by-hop, so by default the edge drops it. It forwards it only when the
exchange can be switched safely (RFC 9110 §7.8): an HTTP/1.1 request naming ``upgrade`` in
``Connection``, with an ``Upgrade`` value, and without a body (bytes after the head must be
the new protocol's, not a body's, or one message could be read two ways). ``h2c`` is never
tunnelled: the edge speaks HTTP/1.1 to upstreams, so an h2c upgrade is dropped (with its
``HTTP2-Settings``) and the request proxied as plain HTTP/1.1. Any other request that
mentions ``Upgrade`` is proxied as plain HTTP/1.1 too, the upgrade ignored as the RFC allows a
server to; a 101 to a request the edge did not forward as an upgrade is the upstream's error
(502), as is a 101 naming a protocol that was not offered.

After a 101 the bytes flow both ways unchanged until either side closes, or
``tunnel_idle_timeout`` passes without a byte either way. A tunnel whose endpoint leaves the
routes (its instance drains) is closed ``tunnel_drain_timeout`` later unless the endpoint comes
back; one whose endpoint is still routed is never cut by a route change.
"""

from __future__ import annotations

import asyncio
import contextlib

from mycelium.edge.http1 import RequestHead, ResponseHead
from mycelium.edge.routes import Endpoint
from mycelium.edge.wire import Conduit

__all__ = ["Tunnel", "Tunnels", "switch_error", "switch_head", "upgrade_of"]

_DROP_SWITCH = frozenset({b"x-mycelium-edge"})


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip() for t in value.split(b",") if t.strip()]


def upgrade_of(req: RequestHead) -> bytes | None:
    """The ``Upgrade`` value to forward for ``req``, or ``None``: proxy it as plain HTTP/1.1.

    ``h2c`` is removed from the offered protocols; nothing left means no upgrade.
    """
    if (req.upgrade is None or req.minor != 1 or b"upgrade" not in req.connection_tokens
            or req.chunked or req.content_length):
        return None
    offered = [t for t in _tokens(req.upgrade) if t.split(b"/", 1)[0].lower() != b"h2c"]
    return b", ".join(offered) if offered else None


def switch_error(resp: ResponseHead, asked: bytes | None) -> str | None:
    """Why a 101 answer must not be tunnelled (``None``: it may).

    Args:
        resp: The upstream's 101 head.
        asked: The ``Upgrade`` value the edge forwarded (``None``: it asked for no upgrade).
    """
    if asked is None:
        return "upstream switched protocols unasked"
    chosen = _tokens(resp.upgrade or b"")
    offered = {t.lower() for t in _tokens(asked)}
    if len(chosen) != 1 or chosen[0].lower() not in offered:
        return "upstream switched to a protocol that was not offered"
    return None


def switch_head(resp: ResponseHead, edge_line: bytes) -> bytes:
    """The 101 head for the client: the upstream's end-to-end fields, the switch, the edge."""
    return b"".join((b"HTTP/1.1", resp.status_line[8:], b"\r\n",
                     resp.forward_block(_DROP_SWITCH), b"Connection: upgrade\r\nUpgrade: ",
                     resp.upgrade or b"", b"\r\n", edge_line, b"\r\n"))


class Tunnel:
    """One upgraded connection: pipes bytes both ways until a side closes or it idles out.

    Args:
        client: The client connection (already sent the 101).
        up: The upstream connection (its 101 head consumed).
        app: For the metrics gauge.
        ep: The endpoint, so a drain of its instance can be told apart from a route change.
        idle: ``tunnel_idle_timeout``.
        send_timeout: How long a side may refuse our writes.
    """

    def __init__(self, client: Conduit, up: Conduit, app: str, ep: Endpoint, idle: float,
                 send_timeout: float) -> None:
        self.client = client
        self.up = up
        self.app = app
        self.ep = ep
        self.idle = idle
        self.send_timeout = send_timeout
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.closer: asyncio.TimerHandle | None = None
        """Set while the endpoint is draining: closes the tunnel when it fires."""

    async def run(self) -> None:
        """Pipe until either direction ends, then close both sides (queued bytes go first)."""
        pipes = [self.loop.create_task(self._pipe(self.client, self.up)),
                 self.loop.create_task(self._pipe(self.up, self.client))]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            for task in pipes:
                with contextlib.suppress(BaseException):
                    await task
            self.close()

    async def _pipe(self, src: Conduit, dst: Conduit) -> None:
        """Copy ``src`` → ``dst`` until ``src`` closes or the tunnel idles out."""
        buf = src.buf
        loop = self.loop
        while True:
            if buf:
                dst.write(bytes(buf))
                buf.clear()
                src.consumed()
                self.last = loop.time()
                if dst.must_drain:
                    await dst.drain(self.send_timeout)
                continue
            if src.eof:
                return
            remaining = self.last + self.idle - loop.time()
            if remaining <= 0:
                return  # no byte either way for ``idle`` seconds
            with contextlib.suppress(TimeoutError):
                await src.wait_more(remaining)  # on expiry: re-check, the other way may move

    def drain(self, grace: float) -> None:
        """The endpoint left the routes: close in ``grace`` seconds unless it comes back."""
        if self.closer is None:
            self.closer = self.loop.call_later(grace, self.close)

    def keep(self) -> None:
        """The endpoint is routed again: keep the tunnel open."""
        if self.closer is not None:
            self.closer.cancel()
            self.closer = None

    def close(self) -> None:
        """Close both sides after what is queued."""
        if self.closer is not None:
            self.closer.cancel()
            self.closer = None
        self.client.close()
        self.up.close()


class Tunnels:
    """The open tunnels of one edge process, for drains and the ``mycelium_edge_tunnels``
    gauge.

    Args:
        gauge: ``EdgeMetrics.tunnels`` (app → open tunnels), kept up to date here.
        drain_timeout: ``tunnel_drain_timeout``.
    """

    def __init__(self, gauge: dict[str, int], drain_timeout: float) -> None:
        self.gauge = gauge
        self.drain_timeout = drain_timeout
        self.open: set[Tunnel] = set()

    async def run(self, tunnel: Tunnel, routed: bool = True) -> None:
        """Run ``tunnel`` to its end, counted while it is open."""
        self.open.add(tunnel)
        self.gauge[tunnel.app] = self.gauge.get(tunnel.app, 0) + 1
        if not routed:
            tunnel.drain(self.drain_timeout)
        try:
            await tunnel.run()
        finally:
            self.open.discard(tunnel)
            self.gauge[tunnel.app] -= 1

    def routes_changed(self, keep: set[tuple[str, int]]) -> None:
        """Start draining the tunnels of endpoints no longer routed; keep the others."""
        for tunnel in self.open:
            if (tunnel.ep.host, tunnel.ep.port) in keep:
                tunnel.keep()
            else:
                tunnel.drain(self.drain_timeout)
