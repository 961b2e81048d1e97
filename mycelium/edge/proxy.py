"""The reverse proxy itself: one coroutine per client connection, pooled upstream connections.

Flow C of the seed: a request's app is looked up in the current routing snapshot (no call to any
actor), endpoints are tried round-robin with passive health, and bodies are streamed both ways
with back-pressure. Runs entirely on the edge's own event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import orjson

from mycelium.edge.balancer import Balancer
from mycelium.edge.config import EdgeConfig
from mycelium.edge.http1 import (
    ProtocolError,
    RequestHead,
    ResponseHead,
    parse_request_head,
    parse_response_head,
)
from mycelium.edge.metrics import EdgeMetrics
from mycelium.edge.relay import (
    abort_on_error,
    client_fault,
    pump_body,
    relay_response,
    response_head,
    settle,
)
from mycelium.edge.routes import APP_NAME, Endpoint, RouteTable, split_target
from mycelium.edge.upstream import Upstream, UpstreamPool, read_response_head
from mycelium.edge.wire import Conduit

__all__ = ["EdgeProxy"]

log = logging.getLogger(__name__)

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_DROP_REQUEST = frozenset({b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto",
                           b"expect"})
_REASONS = {400: "Bad Request", 404: "Not Found", 408: "Request Timeout",
            413: "Content Too Large", 417: "Expectation Failed",
            431: "Request Header Fields Too Large", 501: "Not Implemented",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
            505: "HTTP Version Not Supported", 200: "OK"}


class _Exchange:
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


class _Client(Conduit):
    """A client connection.

    Between requests it is driven by callbacks (:meth:`EdgeProxy._dispatch`); a request that
    the fast path cannot finish runs in a task (``task``) that hands back when done.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, proxy: EdgeProxy) -> None:
        super().__init__(loop)
        self.proxy = proxy
        self.task: asyncio.Task[None] | None = None
        self.exchange: _Exchange | None = None
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


class EdgeProxy:
    """The request-handling core, bound to one event loop.

    Args:
        config: Limits, timeouts and the edge id.
        loop: The loop every connection runs on.
    """

    def __init__(self, config: EdgeConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.routes = RouteTable()
        self.metrics = EdgeMetrics()
        self.balancer = Balancer(config.max_fails, config.fail_timeout)
        self.draining = False
        self.clients: set[_Client] = set()
        self.pool = UpstreamPool(loop, config.upstream_keepalive, config.connect_timeout)
        self._edge_line = b"X-Mycelium-Edge: " + config.edge_id.encode("latin-1") + b"\r\n"
        self._proto_line = b"X-Forwarded-Proto: " + config.forwarded_proto.encode() + b"\r\n"
        self._sweeper: asyncio.Task[None] | None = None

    def protocol(self) -> _Client:
        """Protocol factory for ``loop.create_server``."""
        return _Client(self.loop, self)

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
    def _dispatch(self, client: _Client) -> None:
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
        client.exchange = _Exchange(req, parts[0], order, ep, up, started,
                                    self.loop.time() + self.config.read_timeout)
        up.watcher = client.on_upstream
        self.metrics.active += 1
        if up.buf or up.eof:
            self._fast_response(client)

    def _slow(self, client: _Client,
              first: tuple[RequestHead, Sequence[Endpoint] | None] | None) -> None:
        """Hand the connection to a task for a request the fast path does not do."""
        client.task = self.loop.create_task(self._serve(client, first))

    def _fast_detach(self, client: _Client, pool: bool) -> None:
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

    def _fast_response(self, client: _Client) -> None:
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
            elif len(ubuf) > 65536:
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

    def _fast_to_task(self, client: _Client, ex: _Exchange) -> None:
        """Continue a fast exchange in a task (streaming bodies, interim responses)."""
        client.exchange = None
        self.metrics.active -= 1
        ex.up.watcher = None
        client.upstream = ex.up
        client.task = self.loop.create_task(self._serve_rest(client, ex))

    def _fast_failed(self, client: _Client, ex: _Exchange, why: str) -> None:
        """The pooled connection failed before a response: resend if safe, else 502."""
        self._fast_detach(client, pool=False)
        if ex.req.method in _IDEMPOTENT:
            self._slow(client, (ex.req, ex.order))  # bodyless and idempotent: resend
            return
        self.metrics.upstream_failure(ex.app)
        self._error(client, 502, f"upstream {ex.ep.url} failed: {why}", ex.app,
                    close=not ex.req.keep_alive)
        if not ex.req.keep_alive:
            client.close()

    # -- tasks for what the fast path does not do ---------------------------------------------
    async def _serve(self, client: _Client,
                     first: tuple[RequestHead, Sequence[Endpoint] | None] | None) -> None:
        """Run one request in a task, then give the connection back to the callbacks."""
        keep = False
        try:
            if first is None:
                try:
                    head = await self._read_head(client)
                except ProtocolError as exc:
                    self._error(client, exc.status, str(exc), "", close=True)
                    return
                if head is None:
                    return
                first = (head, None)
            req, order = first
            self.metrics.active += 1
            try:
                keep = await self._handle(client, req, order)
            finally:
                self.metrics.active -= 1
            client.upstream = client.pump = None  # pooled or closed by the request itself
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            client.abort()
        except Exception:  # a bug must cost one connection, never the edge
            log.exception("edge: unexpected error serving %s", client.peer)
            client.abort()
        finally:
            self._task_done(client, keep)

    async def _serve_rest(self, client: _Client, ex: _Exchange) -> None:
        """Finish a fast exchange whose response needs streaming."""
        keep = False
        up = ex.up
        try:
            self.metrics.active += 1
            try:
                try:
                    resp = await read_response_head(up, self.config.read_timeout)
                except TimeoutError:
                    self.metrics.upstream_failure(ex.app)
                    self._error(client, 504, f"upstream {ex.ep.url} timed out", ex.app,
                                close=True)
                    return
                except (ConnectionError, ProtocolError, OSError) as exc:
                    self.metrics.upstream_failure(ex.app)
                    self._error(client, 502, f"upstream {ex.ep.url} failed: {exc}", ex.app,
                                close=True)
                    return
                self.balancer.succeeded(ex.ep)
                self.metrics.observe(ex.app, time.monotonic() - ex.started)
                self.metrics.request(ex.app, resp.status)
                keep = await relay_response(client, ex.req, up, resp, None, self.config,
                                            self._edge_line,
                                            ex.req.keep_alive and not self.draining, self.pool)
                client.upstream = None  # pooled or closed by relay_response
            finally:
                self.metrics.active -= 1
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            client.abort()
        except Exception:  # a bug must cost one connection, never the edge
            log.exception("edge: unexpected error serving %s", client.peer)
            client.abort()
        finally:
            self._task_done(client, keep)

    def _task_done(self, client: _Client, keep: bool) -> None:
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

    async def _read_head(self, client: _Client) -> RequestHead | None:
        """Read one request head; ``None`` on a clean close or an idle timeout.

        Raises:
            ProtocolError: Malformed, oversized (431) or too slow (408) head.
        """
        buf = client.buf
        limit = self.config.max_header_bytes
        started = 0.0
        while True:
            while buf[:2] == b"\r\n":  # RFC 9112 §2.2: ignore blank lines before a request
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                if end > limit:
                    raise ProtocolError("request head too large", 431)
                data = bytes(buf[:end])
                del buf[:end + 4]
                client.consumed()
                return parse_request_head(data)
            if len(buf) > limit:
                raise ProtocolError("request head too large", 431)
            if client.eof:
                if buf:
                    raise ProtocolError("incomplete request head")
                return None
            if buf:
                if not started:
                    started = time.monotonic()
                timeout = started + self.config.header_timeout - time.monotonic()
                if timeout <= 0:
                    raise ProtocolError("request head too slow", 408)
            else:
                timeout = self.config.keepalive_timeout
            try:
                await client.wait_more(timeout)
            except TimeoutError:
                if not buf:
                    return None
                raise ProtocolError("request head too slow", 408) from None

    def _error(self, client: _Client, status: int, message: str, app: str,
               close: bool = False) -> None:
        """Answer with an edge error: JSON body, ``X-Mycelium-Edge``, counted in metrics."""
        body = orjson.dumps({"error": message})
        self._send_own(client, status, body, b"application/json", close)
        self.metrics.request(app, status)

    def _send_own(self, client: _Client, status: int, body: bytes, ctype: bytes,
                  close: bool) -> None:
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Length: {len(body)}\r\n").encode()
        head += b"Content-Type: " + ctype + b"\r\n" + self._edge_line
        if close or self.draining:
            head += b"Connection: close\r\n"
        with contextlib.suppress(ConnectionError):
            client.write(head + b"\r\n" + body)

    # -- one request ------------------------------------------------------------------------------
    async def _handle(self, client: _Client, req: RequestHead,
                      order: Sequence[Endpoint] | None = None) -> bool:
        """Answer one request; return whether the client connection may carry another.

        ``order`` is given when the dispatcher already routed the request.
        """
        if order is not None:
            app, target = split_target(req.target) or ("", "/")
            return await self._proxy(client, req, app, target, order)
        has_body = req.chunked or bool(req.content_length)
        reusable = req.keep_alive and not has_body  # an unread body forces a close on errors
        target = req.target
        if target.startswith("/_mycelium/"):
            return self._own(client, req, reusable)
        parts = split_target(target)
        if parts is None:
            self._error(client, 400, "request target must start with /", "", close=True)
            return False
        app, upstream_target = parts
        if not APP_NAME.match(app):
            self._error(client, 400 if app else 404, f"bad app name {app[:64]!r}", "",
                        close=not reusable)
            return reusable
        limit = self.config.max_body_bytes
        if limit is not None and req.content_length is not None and req.content_length > limit:
            self._error(client, 413, "request body too large", app, close=True)
            return False
        route = self.routes.get(app)
        if route is None:
            self._error(client, 404, f"unknown app {app!r}", "", close=not reusable)
            return reusable
        if not route.endpoints:
            self._error(client, 503, f"app {app!r} has no ready endpoint", app,
                        close=not reusable)
            return reusable
        return await self._proxy(client, req, app, upstream_target, self.balancer.order(route))

    def _own(self, client: _Client, req: RequestHead, reusable: bool) -> bool:
        """Serve the edge's own ``/_mycelium/...`` paths."""
        path = req.target.partition("?")[0]
        if req.method not in ("GET", "HEAD"):
            self._error(client, 405 if path in ("/_mycelium/health", "/_mycelium/metrics")
                        else 404, "method not allowed", "", close=not reusable)
            return reusable
        if path == "/_mycelium/health":
            body, ctype = b'{"status":"ok"}', b"application/json"
        elif path == "/_mycelium/metrics":
            body, ctype = self.metrics.render().encode(), b"text/plain; version=0.0.4"
        else:
            self._error(client, 404, "no such edge path", "", close=not reusable)
            return reusable
        self._send_own(client, 200, b"" if req.method == "HEAD" else body, ctype,
                       not reusable)
        self.metrics.request("", 200)
        return reusable and not self.draining

    def _upstream_head(self, client: _Client, req: RequestHead, target: str,
                       ep: Endpoint) -> bytes:
        """Build the request head for the upstream: end-to-end fields + X-Forwarded-*.

        The forwarded fields are added after the hop-by-hop ones were dropped, so a client's
        ``Connection: X-Forwarded-For`` cannot remove them.
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
        return b"".join((
            f"{req.method} {target} HTTP/1.1\r\n".encode(), req.forward_block(_DROP_REQUEST),
            extra, b"X-Forwarded-For: ", xff, b"\r\nX-Forwarded-Host: ", host, b"\r\n",
            self._proto_line, b"\r\n"))

    async def _proxy(self, client: _Client, req: RequestHead, app: str, target: str,
                     order: Sequence[Endpoint]) -> bool:
        """Send the request upstream (with retries) and stream the response back."""
        has_body = req.chunked or bool(req.content_length)
        may_resend = not has_body and req.method in _IDEMPOTENT
        pump: asyncio.Task[None] | None = None
        up: Upstream | None = None
        resp: ResponseHead | None = None
        timed_out = False
        failure = "no endpoint could be reached"
        attempt = 0
        started = 0.0
        tries = list(order)
        i = 0
        while i < len(tries):
            ep = tries[i]
            if attempt:
                self.metrics.retry(app)
            attempt += 1
            try:
                up = client.upstream = await self.pool.acquire(ep)
            except (OSError, TimeoutError) as exc:
                timed_out = isinstance(exc, TimeoutError)
                failure = f"upstream {ep.url} unreachable: {exc.__class__.__name__}"
                self.balancer.failed(ep)
                self.metrics.upstream_failure(app)
                i += 1
                continue
            reused = up.reused
            started = time.monotonic()
            try:
                up.write(self._upstream_head(client, req, target, ep))
                if has_body:
                    if req.expect_continue:
                        client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    pump = client.pump = self.loop.create_task(
                        pump_body(client, up, req, self.config))
                    pump.add_done_callback(abort_on_error(up))
                resp = await read_response_head(up, self.config.read_timeout)
            except TimeoutError:
                up.abort()
                if client_fault(pump) is None and pump is not None:
                    await settle(pump)
                if client_fault(pump) is not None:
                    return self._pump_failed(client, pump, app)
                self.metrics.upstream_failure(app)
                self._error(client, 504, f"upstream {ep.url} timed out", app, close=True)
                return False
            except (ConnectionError, ProtocolError, OSError) as exc:
                up.abort()
                if client_fault(pump) is None and pump is not None:
                    await settle(pump)
                if client_fault(pump) is not None:
                    return self._pump_failed(client, pump, app)
                pump = client.pump = None
                if reused and may_resend:
                    continue  # a stale pooled connection: same endpoint, fresh connection
                self.metrics.upstream_failure(app)
                failure = f"upstream {ep.url} failed: {exc or exc.__class__.__name__}"
                if may_resend and isinstance(exc, ConnectionError):
                    i += 1
                    continue
                self._error(client, 502, failure, app, close=True)
                return False
            break
        if resp is None or up is None:
            if timed_out:
                self._error(client, 504, failure, app, close=not (req.keep_alive and not has_body))
                return req.keep_alive and not has_body
            self._error(client, 502, failure, app, close=not (req.keep_alive and not has_body))
            return req.keep_alive and not has_body
        self.balancer.succeeded(ep)
        self.metrics.observe(app, time.monotonic() - started)
        self.metrics.request(app, resp.status)
        return await relay_response(client, req, up, resp, pump, self.config, self._edge_line,
                                    req.keep_alive and not self.draining, self.pool)

    def _pump_failed(self, client: _Client, pump: asyncio.Task[None] | None, app: str) -> bool:
        """Answer a request whose body the client spoiled (or just drop a vanished client)."""
        fault = client_fault(pump)
        if fault is not None and fault.status is not None:
            self._error(client, fault.status, str(fault), app, close=True)
        else:
            client.abort()
        return False



