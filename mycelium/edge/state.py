"""What the edge's fast path and slow path share: its state on the loop and its own answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import orjson

from mycelium.edge.accesslog import AccessLog, LineSink
from mycelium.edge.answers import AnswerWindow
from mycelium.edge.balancer import Balancer
from mycelium.edge.config import EdgeConfig
from mycelium.edge.connection import ClientConnection
from mycelium.edge.ejection import EjectionEvent, EjectionPolicy, Ejector
from mycelium.edge.hold import Holds
from mycelium.edge.http1 import RequestHead
from mycelium.edge.limits import connection_cap, descriptor_limit
from mycelium.edge.metrics import EdgeMetrics
from mycelium.edge.routes import Endpoint, RouteTable
from mycelium.edge.tunnel import Tunnels
from mycelium.edge.upstream import UpstreamPool
from supervisors.reports import Report, Reporter

__all__ = ["DROP_REQUEST", "IDEMPOTENT", "EdgeState", "OutcomeSink"]

OutcomeSink = Callable[[str, Endpoint, bool, int], None]
"""Receives ``(app, endpoint, ok, total)`` for each outcome that matters to ejection."""

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""Methods that may be resent once bytes were sent (RFC 9110 §9.2.2), when bodyless."""
DROP_REQUEST = frozenset({b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto",
                          b"x-forwarded-prefix", b"expect", b"http2-settings"})
"""Request fields the edge replaces (the X-Forwarded-* set) or answers itself (Expect)."""
_PROTO_HTTPS = b"X-Forwarded-Proto: https\r\n"
_REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 413: "Content Too Large", 417: "Expectation Failed",
            431: "Request Header Fields Too Large", 501: "Not Implemented",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
            505: "HTTP Version Not Supported", 200: "OK", 308: "Permanent Redirect"}


class EdgeState:
    """The edge's state on its loop, and the answers either path can give.

    One instance, owned by :class:`~mycelium.edge.proxy.EdgeProxy` and shared by its fast and
    slow paths. Only the loop thread touches it, except ``routes``: the server swaps that
    snapshot from another thread with one attribute store, which the loop sees atomically.

    Args:
        config: Limits, timeouts and the edge id.
        loop: The loop every connection runs on.
        reporter: Receives ``endpoint_ejected`` / ``endpoint_returned`` records (on the loop
            thread); ``None`` drops them.
        access_sink: Where access log lines go instead of ``<home>/logs/access.jsonl``.
        outcome_sink: Set in an edge worker: outcomes that matter to ejection (failures, and
            successes of failing endpoints) go there instead of to the local Ejector, which
            then only mirrors the edge actor's decisions.
    """

    def __init__(self, config: EdgeConfig, loop: asyncio.AbstractEventLoop,
                 reporter: Reporter | None = None, access_sink: LineSink | None = None,
                 outcome_sink: OutcomeSink | None = None) -> None:
        self.config = config
        self.loop = loop
        self.routes = RouteTable()
        self.metrics = EdgeMetrics()
        self.ejector = Ejector(EjectionPolicy(config.eject_after, config.eject_time,
                                              config.eject_max))
        self.balancer = Balancer(config.max_fails, config.fail_timeout,
                                 ejected=self.ejector.ejected)
        self.metrics.ejected = self.ejector.out_per_app
        self.tunnels = Tunnels(self.metrics.tunnels, config.tunnel_drain_timeout)
        """The upgraded connections open now (WebSockets)."""
        self._reporter = reporter
        self._outcome_sink = outcome_sink
        self.answers = AnswerWindow()  # per digest, while an app runs a canary
        self.draining = False
        self.clients: set[ClientConnection] = set()
        self.max_clients = connection_cap(config.max_connections, descriptor_limit())
        """Client connections held at once (``max_connections``, lowered to fit descriptors)."""
        self.pool = UpstreamPool(loop, config.upstream_keepalive, config.connect_timeout)
        self.edge_line = b"X-Mycelium-Edge: " + config.edge_id.encode("latin-1") + b"\r\n"
        """The ``X-Mycelium-Edge`` field every response carries, ready to append to a head."""
        self._proto_line = b"X-Forwarded-Proto: " + config.forwarded_proto.encode() + b"\r\n"
        home = config.access_log_home
        self.access = (AccessLog(home, config.access_rotate_bytes, config.access_keep,
                                 access_sink) if home is not None else None)
        """Where answered requests are logged, when ``[edge] access_log`` is on."""
        self.holds = Holds(loop, config.hold_timeout, config.hold_max, config.on_wake,
                           config.hold_gate)

    def outcome(self, app: str, ep: Endpoint, ok: bool, total: int) -> None:
        """Count one outcome of a request to ``ep`` towards its ejection (``ok``: not 5xx,
        not failed, not timed out); ``total`` is how many endpoints ``app`` has.

        During a canary (endpoints with a digest) the paths pass a 5xx answer as ``ok``: the
        fabric judges the canary by its 5xx rate and reverts it, which ejection would prevent
        by starving it of the answers it is judged by; failures to connect still eject."""
        sink = self._outcome_sink
        if sink is not None:
            if not ok or ep.url in self.ejector.failing:
                sink(app, ep, ok, total)
            return
        event = self.ejector.outcome(app, ep, ok, total, self.loop.time())
        if event is not None:
            self._announce(event)

    def release_ejections(self) -> None:
        """Put back every endpoint whose ejection is over (the sweeper's tick)."""
        if self._outcome_sink is not None:
            return  # a worker's ejections end when the edge actor says so
        for event in self.ejector.release(self.loop.time()):
            self._announce(event)

    def _announce(self, event: EjectionEvent) -> None:
        """Count an ejection in the metrics and report it to the supervision log."""
        if event.event == "endpoint_ejected":
            self.metrics.ejection(event.app)
            reason = (f"{self.config.eject_after} consecutive failures; out for "
                      f"{event.seconds:g} s (ejection {event.count})")
        else:
            reason = "ejection over"
        if self._reporter is not None:
            self._reporter(Report(
                ts=time.time(), event=event.event, supervisor="mesh/edge",
                child=event.instance or event.url, reason=reason,
                extra={"app": event.app, "instance": event.instance or None, "url": event.url,
                       "count": event.count, "seconds": event.seconds}))

    def error(self, client: ClientConnection, status: int, message: str, app: str,
              close: bool = False) -> None:
        """Answer with an edge error: JSON body, ``X-Mycelium-Edge``, counted in metrics."""
        body = orjson.dumps({"error": message})
        self.send_own(client, status, body, b"application/json", close)
        self.metrics.request(app, status)
        client.routed_app = app or None

    def send_own(self, client: ClientConnection, status: int, body: bytes, ctype: bytes,
                 close: bool) -> None:
        """Send a response the edge made itself (a client already gone is ignored)."""
        client.status = status
        client.sent_bytes = len(body)
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Length: {len(body)}\r\n").encode()
        head += b"Content-Type: " + ctype + b"\r\n" + self.edge_line
        if close or self.draining:
            head += b"Connection: close\r\n"
        with contextlib.suppress(ConnectionError):
            client.write(head + b"\r\n" + body)

    def log_access(self, client: ClientConnection, req: RequestHead | None,
                   started: float) -> None:
        """Log the answer the slow path (or an error) gave, from the client's record of it.

        Args:
            client: The connection; its ``status``, ``sent_bytes``, ``routed_app``,
                ``instance`` and ``retries`` describe the answer.
            req: The request, when its head could be parsed.
            started: ``time.monotonic()`` when the request's head was complete.
        """
        access = self.access
        if access is None or not client.status:
            return
        if req is None:
            access.add(client.peer, None, None, None, client.status, client.sent_bytes,
                       (time.monotonic() - started) * 1000, None, None, 0)
            return
        access.add(client.peer, req.method, req.host, req.target, client.status,
                   client.sent_bytes, (time.monotonic() - started) * 1000, client.routed_app,
                   client.instance, client.retries)

    def upstream_head(self, client: ClientConnection, req: RequestHead, target: str,
                      ep: Endpoint, prefix: bytes = b"", upgrade: bytes | None = None
                      ) -> bytes:
        """Build the request head for the upstream: end-to-end fields + X-Forwarded-*.

        ``prefix`` (``/APP``, empty for an app reached by host) goes as
        ``X-Forwarded-Prefix``; ``upgrade`` (protocols the edge will tunnel) goes as
        ``Connection: upgrade`` + ``Upgrade``. The forwarded fields are added after the
        hop-by-hop ones were dropped, so a client's ``Connection: X-Forwarded-For`` cannot
        remove them.
        """
        named = req.connection_tokens
        host = req.host
        extra = b""
        if host is None or b"host" in named:
            host = f"{ep.host}:{ep.port}".encode()
            extra = b"Host: " + host + b"\r\n"
        peer = client.peer.encode()
        if req.forwarded_for and b"x-forwarded-for" not in named:
            xff = b", ".join([*req.forwarded_for, peer])
        else:
            xff = peer
        if req.chunked:
            extra += b"Transfer-Encoding: chunked\r\n"
        if prefix:
            extra += b"X-Forwarded-Prefix: " + prefix + b"\r\n"
        if upgrade is not None:
            extra += b"Connection: upgrade\r\nUpgrade: " + upgrade + b"\r\n"
        return b"".join((
            f"{req.method} {target} HTTP/1.1\r\n".encode(), req.forward_block(DROP_REQUEST),
            extra, b"X-Forwarded-For: ", xff, b"\r\nX-Forwarded-Host: ", host, b"\r\n",
            _PROTO_HTTPS if client.tls else self._proto_line, b"\r\n"))
