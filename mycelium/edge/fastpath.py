"""The edge's fast path: a bodyless request on a pooled connection, answered from callbacks.

A request's app is looked up in the current routing snapshot (no call to any actor) and, when
the first endpoint in the balancer's order has an idle pooled connection, the request is sent
and its small complete response relayed entirely from protocol callbacks: no coroutine, future
or timer per request. Everything else is handed to the :class:`SlowPath` with one call
(:meth:`SlowPath.take`). The fast path is the connections' :class:`ConnectionHandler`.
"""

from __future__ import annotations

import time

from mycelium.edge.connection import ClientConnection, Exchange
from mycelium.edge.http1 import (
    ProtocolError,
    RequestHead,
    ResponseHead,
    parse_request_head,
    parse_response_head,
)
from mycelium.edge.relay import response_head
from mycelium.edge.routes import route_request
from mycelium.edge.slowpath import SlowPath
from mycelium.edge.state import IDEMPOTENT, EdgeState
from mycelium.edge.upstream import MAX_RESPONSE_HEAD

__all__ = ["FastPath"]


class FastPath:
    """Protocol callbacks for the common case; a :class:`ConnectionHandler`.

    Args:
        state: The edge's state (its config, metrics, balancer and pool are fixed for its
            lifetime, so they are bound here once: fewer lookups per request).
        slow: Where requests this path does not finish go.
    """

    def __init__(self, state: EdgeState, slow: SlowPath) -> None:
        self.state = state
        self.slow = slow
        self.loop = state.loop
        self.metrics = state.metrics
        self.balancer = state.balancer
        self.pool = state.pool
        self._max_head = state.config.max_header_bytes
        self._read_timeout = state.config.read_timeout
        self._edge_line = state.edge_line
        self.access = state.access
        self._failing = state.ejector.failing  # empty: a success changes no ejection count
        self._ready = self.upstream_ready  # the upstream's watcher (bound once, not per request)
        self._sent: tuple[ResponseHead, RequestHead, bool, bytes] | None = None
        """The last response head sent: for which response, request and keep-alive."""

    # -- the connection's callbacks ---------------------------------------------------------------
    def opened(self, client: ClientConnection) -> None:
        """Track a new client connection, or close it at once when the edge is full.

        Its request head is due within ``header_timeout`` of now (the accept).
        """
        clients = self.state.clients
        if len(clients) >= self.state.max_clients:
            self.metrics.refused += 1
            client.close()
            return
        clients.add(client)
        self.metrics.connections = len(clients)
        client.head_started = self.loop.time()

    def lost(self, client: ClientConnection) -> None:
        """Forget a client that is gone; drop its fast exchange's upstream (mid-response)."""
        clients = self.state.clients
        clients.discard(client)
        self.metrics.connections = len(clients)
        if client.exchange is not None:
            self.detach(client, pool=False)

    def dispatch(self, client: ClientConnection) -> None:
        """Take the next request from the client's buffer: fast path, or a task for the rest."""
        state = self.state
        buf = client.buf
        if state.draining or client.closed:
            client.close()
            return
        if not buf:
            if client.eof:
                client.close()
            client.last_active = self.loop.time()
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if client.eof or len(buf) > self._max_head:
                self.slow.take(client, None)  # it answers 400/431 properly
            elif not client.head_started:
                client.head_started = self.loop.time()
            return
        if end > self._max_head:
            self.slow.take(client, None)
            return
        try:  # (a head after a blank line, which the slow path skips, fails here too)
            req = parse_request_head(bytes(buf[:end]))
        except ProtocolError:
            self.slow.take(client, None)  # re-parses and answers the error
            return
        del buf[:end + 4]
        client.consumed()
        client.head_started = 0.0
        if not req.plain or client.must_drain or req.target.startswith("/_mycelium/"):
            self.slow.take(client, (req, None))
            return
        routed = route_request(state.routes, req.host, req.target)
        if routed is None:
            self.slow.take(client, (req, None))  # answers 400
            return
        app, target, prefix, route = routed
        if route is None or not route.endpoints:
            self.slow.take(client, (req, None))  # answers 404/503
            return
        order = self.balancer.order(route)
        ep = order[0]
        up = self.pool.take_idle(ep)
        if up is None:
            self.slow.take(client, (req, order))
            return
        sent = client.sent_head  # a keep-alive client repeats its request: its head too
        if sent is not None and sent[0] is req and sent[1] == target and sent[2] == prefix:
            head = sent[3]
        else:
            head = state.upstream_head(client, req, target, ep, prefix)
            if req.host is not None and b"host" not in req.connection_tokens:
                client.sent_head = (req, target, prefix, head)  # (else it names the endpoint)
        try:
            up.write(head)
        except ConnectionError:
            up.abort()
            self.slow.take(client, (req, order))
            return
        client.exchange = Exchange(req, app, order, ep, up, time.monotonic(),
                                   self.loop.time() + self._read_timeout, prefix)
        up.watcher = self._ready
        up.watched = client
        self.metrics.active += 1
        if up.buf or up.eof:
            self.upstream_ready(client)

    def upstream_ready(self, client: ClientConnection) -> None:
        """The fast path's upstream sent bytes or closed: answer if the response is complete.

        Anything but a small complete response (1xx, chunked, a body still arriving, close-
        delimited) is handed to a task that streams it as the slow path does.
        """
        ex = client.exchange
        if ex is None:
            return
        up = ex.up
        ubuf = up.buf
        end = ubuf.find(b"\r\n\r\n")
        if end < 0:
            if up.eof:
                self._failed(client, ex, "upstream closed before responding")
            elif len(ubuf) > MAX_RESPONSE_HEAD:
                self._failed(client, ex, "upstream response head too large")
            return
        try:
            resp = parse_response_head(bytes(ubuf[:end]))
        except ProtocolError as exc:
            self._failed(client, ex, str(exc))
            return
        req = ex.req
        if req.method == "HEAD" or resp.status in (204, 304):
            length = 0
        elif resp.content_length is not None and not resp.chunked:
            length = resp.content_length
        else:
            length = -1
        stop = end + 4 + length
        if resp.status < 200 or length < 0 or len(ubuf) < stop:
            self._to_task(client, ex)
            return
        keep = req.keep_alive and not self.state.draining
        sent = self._sent  # clients repeat requests and upstreams answers: so the heads
        if sent is not None and sent[0] is resp and sent[1] is req and sent[2] == keep:
            head = sent[3]
        else:
            wanted = keep
            head, keep, _ = response_head(req, resp, self._edge_line, keep,
                                          (ex.prefix, ex.ep.address) if ex.prefix else None)
            if not resp.locates:  # (else the endpoint's address is part of it)
                self._sent = (resp, req, wanted, head)
        out = head + ubuf[end + 4:stop] if length else head
        del ubuf[:stop]
        ep = ex.ep
        status = resp.status
        self.balancer.succeeded(ep)
        if status >= 500 or self._failing:
            self.state.outcome(ex.app, ep, status < 500 or bool(ep.digest), len(ex.order))
        elapsed = time.monotonic() - ex.started
        self.metrics.answered(ex.app, status, elapsed)
        if ep.digest:
            self.state.answers.count(ex.app, ep.digest, status)
        self.detach(client, pool=resp.keep_alive and not up.eof and not ubuf)
        try:
            client.write(out)
        except ConnectionError:
            return
        access = self.access
        if access is not None:
            access.add(client.peer, req.method, req.host, req.target, status, length,
                       elapsed * 1000, ex.app, ep.instance, 0)
        if not keep:
            client.close()
            return
        client.last_active = self.loop.time()
        if client.buf:
            self.dispatch(client)  # a pipelined request

    # -- ending a fast exchange -------------------------------------------------------------------
    def detach(self, client: ClientConnection, pool: bool) -> None:
        """End the fast exchange: pool or drop the upstream connection."""
        ex = client.exchange
        if ex is None:
            return
        client.exchange = None
        self.metrics.active -= 1
        up = ex.up
        up.watcher = up.watched = None
        if pool:
            self.pool.release(up, self.state.draining)
        else:
            up.abort()

    def expire(self, client: ClientConnection, now: float) -> bool:
        """Answer 504 and close if the fast exchange's upstream is past its deadline.

        Returns:
            Whether ``client`` has a fast exchange (expired or not).
        """
        ex = client.exchange
        if ex is None:
            return False
        if now > ex.deadline:
            self.detach(client, pool=False)
            self.metrics.upstream_failure(ex.app)
            self.state.outcome(ex.app, ex.ep, False, len(ex.order))
            self.state.error(client, 504, f"upstream {ex.ep.url} timed out", ex.app, close=True)
            self._log_error(client, ex)
            client.close()
        return True

    def _log_error(self, client: ClientConnection, ex: Exchange) -> None:
        """Log the error the edge answered a fast exchange with."""
        if self.access is not None:
            client.instance, client.retries = ex.ep.instance, 0
            self.state.log_access(client, ex.req, ex.started)

    def _to_task(self, client: ClientConnection, ex: Exchange) -> None:
        """Continue a fast exchange in a task (streaming bodies, interim responses)."""
        client.exchange = None
        self.metrics.active -= 1
        ex.up.watcher = ex.up.watched = None
        self.slow.take(client, ex)

    def _failed(self, client: ClientConnection, ex: Exchange, why: str) -> None:
        """The pooled connection failed before a response: resend if safe, else 502."""
        self.detach(client, pool=False)
        if ex.req.method in IDEMPOTENT:
            self.slow.take(client, (ex.req, ex.order))  # bodyless and idempotent: resend
            return
        self.metrics.upstream_failure(ex.app)
        self.state.outcome(ex.app, ex.ep, False, len(ex.order))
        self.state.error(client, 502, f"upstream {ex.ep.url} failed: {why}", ex.app,
                         close=not ex.req.keep_alive)
        self._log_error(client, ex)
        if not ex.req.keep_alive:
            client.close()
