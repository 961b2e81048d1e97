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
from mycelium.edge.http1 import ProtocolError, RequestHead, ResponseHead, parse_request_head
from mycelium.edge.metrics import EdgeMetrics
from mycelium.edge.relay import abort_on_error, client_fault, pump_body, relay_response, settle
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


class _Client(Conduit):
    """A client connection; its :meth:`EdgeProxy._serve` task runs its requests in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proxy: EdgeProxy) -> None:
        super().__init__(loop)
        self.proxy = proxy
        self.task: asyncio.Task[None] | None = None
        self.upstream: Upstream | None = None  # in use by the current request
        self.pump: asyncio.Task[None] | None = None
        self.idle = True
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start serving the connection."""
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "unknown"
        self.task = self.loop.create_task(self.proxy._serve(self))

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop working for a client that is gone."""
        super().connection_lost(exc)
        task = self.task
        if task is not None and not task.done() and not self.idle:
            task.cancel()


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
        self._all_done: asyncio.Future[None] | None = None

    def protocol(self) -> _Client:
        """Protocol factory for ``loop.create_server``."""
        return _Client(self.loop, self)

    # -- lifecycle --------------------------------------------------------------------------------
    async def drain(self, grace: float) -> None:
        """Stop taking requests, close idle connections, wait for in-flight ones up to ``grace``."""
        self.draining = True
        for client in list(self.clients):
            if client.idle and not client.buf:
                client.close()
        pending = [c.task for c in self.clients if c.task is not None and not c.task.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        for client in list(self.clients):
            client.abort()
        self.pool.close_all()

    def prune(self, keep: set[tuple[str, int]]) -> None:
        """Forget health state and close pooled connections of endpoints no longer routed."""
        self.balancer.forget(keep)
        self.pool.prune(keep)

    # -- one client connection --------------------------------------------------------------------
    async def _serve(self, client: _Client) -> None:
        self.clients.add(client)
        try:
            while not self.draining:
                client.idle = True
                try:
                    head = await self._read_head(client)
                except ProtocolError as exc:
                    self._error(client, exc.status, str(exc), "", close=True)
                    return
                if head is None:
                    return
                client.idle = False
                self.metrics.active += 1
                try:
                    keep = await self._handle(client, head)
                finally:
                    self.metrics.active -= 1
                client.upstream = client.pump = None
                if not keep:
                    return
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            client.abort()
        except Exception:  # a bug must cost one connection, never the edge
            log.exception("edge: unexpected error serving %s", client.peer)
            client.abort()
        finally:
            self.clients.discard(client)
            client.close()
            if client.upstream is not None:  # cancelled mid-request: nothing to pool
                client.upstream.abort()
            if client.pump is not None:
                client.pump.cancel()

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
    async def _handle(self, client: _Client, req: RequestHead) -> bool:
        """Answer one request; return whether the client connection may carry another."""
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
        """Build the request head for the upstream: end-to-end fields + X-Forwarded-*."""
        lines = req.end_to_end(_DROP_REQUEST)
        xff = [req_line[req_line.index(b":") + 1:].strip()
               for name, req_line in req.lines
               if name == b"x-forwarded-for" and name not in req.connection_tokens]
        xff.append(client.peer.encode())
        host = req.get(b"host")
        if host is None or b"host" in req.connection_tokens:
            host = f"{ep.host}:{ep.port}".encode()
            lines.append(b"Host: " + host)
        parts = [f"{req.method} {target} HTTP/1.1\r\n".encode()]
        for line in lines:
            parts.append(line)
            parts.append(b"\r\n")
        parts.append(b"X-Forwarded-For: " + b", ".join(x for x in xff if x) + b"\r\n")
        parts.append(b"X-Forwarded-Host: " + host + b"\r\n")
        parts.append(self._proto_line)
        if req.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

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



