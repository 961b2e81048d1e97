"""The edge's request core: callbacks for the common case, tasks for the rest.

Flow C of the seed: a request's app is looked up in the current routing snapshot (no call to any
actor), endpoints are tried round-robin with passive health, and bodies are streamed both ways
with back-pressure. A bodyless request whose endpoint has an idle pooled connection is answered
entirely from protocol callbacks (no coroutine, future or timer per request); one sweeper task
enforces the timeouts of that path. Runs entirely on the edge's own event loop thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from mycelium.edge.base import IDEMPOTENT
from mycelium.edge.connection import ClientConnection, Exchange
from mycelium.edge.http1 import ProtocolError, RequestHead, parse_request_head, parse_response_head
from mycelium.edge.relay import response_head
from mycelium.edge.routes import Endpoint, split_target
from mycelium.edge.slowpath import SlowPath
from mycelium.edge.upstream import _MAX_RESPONSE_HEAD

__all__ = ["EdgeProxy"]


class EdgeProxy(SlowPath):
    """The request-handling core, bound to one event loop.

    Args:
        config: Limits, timeouts and the edge id.
        loop: The loop every connection runs on.
    """

    def protocol(self) -> ClientConnection:
        """Protocol factory for ``loop.create_server``."""
        return ClientConnection(self.loop, self)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the sweeper that enforces timeouts on connections driven by callbacks."""
        self._sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Every tick, time out idle, slow-head and fast-path connections (no timer each)."""
        cfg = self.config
        tick = max(0.05, min(0.5, cfg.header_timeout / 4, cfg.read_timeout / 4,
                             cfg.keepalive_timeout / 4))
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            for client in list(self.clients):
                if client.task is not None:
                    continue  # its own coroutine keeps its own deadlines
                ex = client.exchange
                if ex is not None:
                    if now > ex.deadline:
                        self._fast_detach(client, pool=False)
                        self.metrics.upstream_failure(ex.app)
                        self._error(client, 504, f"upstream {ex.ep.url} timed out", ex.app,
                                    close=True)
                        client.close()
                elif client.buf:
                    if client.head_started and now - client.head_started > cfg.header_timeout:
                        self._error(client, 408, "request head too slow", "", close=True)
                        client.close()
                elif now - client.last_active > cfg.keepalive_timeout:
                    client.close()

    async def drain(self, grace: float) -> None:
        """Stop taking requests, close idle connections, wait for in-flight ones up to ``grace``."""
        self.draining = True
        for client in list(self.clients):
            if client.task is None and client.exchange is None:
                client.close()
        deadline = self.loop.time() + grace
        while self.loop.time() < deadline and any(
                c.task is not None or c.exchange is not None for c in self.clients):
            await asyncio.sleep(0.02)  # shutdown only: a short poll beats per-request signalling
        for client in list(self.clients):
            client.abort()
        tasks = [c.task for c in self.clients if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.pool.close_all()

    def prune(self, keep: set[tuple[str, int]]) -> None:
        """Forget health state and close pooled connections of endpoints no longer routed."""
        self.balancer.forget(keep)
        self.pool.prune(keep)

    # -- dispatching requests (callbacks, no coroutine) -------------------------------------------
    def _dispatch(self, client: ClientConnection) -> None:
        """Take the next request from the client's buffer: fast path, or a task for the rest."""
        buf = client.buf
        if self.draining or client.closed:
            client.close()
            return
        if not buf:
            if client.eof:
                client.close()
            client.last_active = self.loop.time()
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if client.eof or len(buf) > self.config.max_header_bytes:
                self._slow(client, None)  # it answers 400/431 properly
            elif not client.head_started:
                client.head_started = self.loop.time()
            return
        if end > self.config.max_header_bytes or buf.startswith(b"\r\n"):
            self._slow(client, None)
            return
        try:
            req = parse_request_head(bytes(buf[:end]))
        except ProtocolError:
            self._slow(client, None)  # re-parses and answers the error
            return
        del buf[:end + 4]
        client.consumed()
        client.head_started = 0.0
        if (req.chunked or req.content_length or req.expect_continue or client.must_drain
                or req.target.startswith("/_mycelium/")):
            self._slow(client, (req, None))
            return
        parts = split_target(req.target)
        route = self.routes.get(parts[0]) if parts is not None else None
        if parts is None or route is None or not route.endpoints:
            self._slow(client, (req, None))  # answers 400/404/503
            return
        order = self.balancer.order(route)
        ep = order[0]
        up = self.pool.take_idle(ep)
        if up is None:
            self._slow(client, (req, order))
            return
        try:
            up.write(self._upstream_head(client, req, parts[1], ep))
        except ConnectionError:
            up.abort()
            self._slow(client, (req, order))
            return
        started = time.monotonic()
        client.exchange = Exchange(req, parts[0], order, ep, up, started,
                                    self.loop.time() + self.config.read_timeout)
        up.watcher = client.on_upstream
        self.metrics.active += 1
        if up.buf or up.eof:
            self._fast_response(client)

    def _slow(self, client: ClientConnection,
              first: tuple[RequestHead, Sequence[Endpoint] | None] | None) -> None:
        """Hand the connection to a task for a request the fast path does not do."""
        client.task = self.loop.create_task(self._serve(client, first))

    def _fast_detach(self, client: ClientConnection, pool: bool) -> None:
        """End the fast exchange: pool or drop the upstream connection."""
        ex = client.exchange
        if ex is None:
            return
        client.exchange = None
        self.metrics.active -= 1
        up = ex.up
        up.watcher = None
        if pool:
            self.pool.release(up, self.draining)
        else:
            up.abort()

    def _fast_response(self, client: ClientConnection) -> None:
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
                self._fast_failed(client, ex, "upstream closed before responding")
            elif len(ubuf) > _MAX_RESPONSE_HEAD:
                self._fast_failed(client, ex, "upstream response head too large")
            return
        try:
            resp = parse_response_head(bytes(ubuf[:end]))
        except ProtocolError as exc:
            self._fast_failed(client, ex, str(exc))
            return
        req = ex.req
        if req.method == "HEAD" or resp.status in (204, 304):
            length = 0
        elif resp.content_length is not None and not resp.chunked:
            length = resp.content_length
        else:
            length = -1
        if resp.status < 200 or length < 0 or len(ubuf) - end - 4 < length:
            self._fast_to_task(client, ex)
            return
        del ubuf[:end + 4]
        body = bytes(ubuf[:length])
        del ubuf[:length]
        keep = req.keep_alive and not self.draining
        head, keep, _ = response_head(req, resp, self._edge_line, keep)
        self.balancer.succeeded(ex.ep)
        self.metrics.observe(ex.app, time.monotonic() - ex.started)
        self.metrics.request(ex.app, resp.status)
        self._fast_detach(client, pool=resp.keep_alive and not up.eof and not ubuf)
        try:
            client.write(head + body if body else head)
        except ConnectionError:
            return
        if not keep:
            client.close()
            return
        client.last_active = self.loop.time()
        if client.buf:
            self._dispatch(client)  # a pipelined request

    def _fast_to_task(self, client: ClientConnection, ex: Exchange) -> None:
        """Continue a fast exchange in a task (streaming bodies, interim responses)."""
        client.exchange = None
        self.metrics.active -= 1
        ex.up.watcher = None
        client.upstream = ex.up
        client.task = self.loop.create_task(self._serve_rest(client, ex))

    def _fast_failed(self, client: ClientConnection, ex: Exchange, why: str) -> None:
        """The pooled connection failed before a response: resend if safe, else 502."""
        self._fast_detach(client, pool=False)
        if ex.req.method in IDEMPOTENT:
            self._slow(client, (ex.req, ex.order))  # bodyless and idempotent: resend
            return
        self.metrics.upstream_failure(ex.app)
        self._error(client, 502, f"upstream {ex.ep.url} failed: {why}", ex.app,
                    close=not ex.req.keep_alive)
        if not ex.req.keep_alive:
            client.close()

    def _task_done(self, client: ClientConnection, keep: bool) -> None:
        """A request task ended: clean up, then close or go back to callbacks."""
        up, pump = client.upstream, client.pump
        client.upstream = client.pump = None
        client.task = None
        if pump is not None and not pump.done():
            pump.cancel()
        if up is not None:  # the request was cut short: its upstream is mid-exchange
            up.abort()
        if not keep or self.draining or client.closed:
            client.close()
            return
        client.last_active = self.loop.time()
        client.head_started = 0.0
        self._dispatch(client)
