"""Requests the fast path does not finish: one task each, then back to the callbacks.

Bodies (streamed both ways), connects and retries over endpoints, interim responses, streamed
or close-delimited responses, the edge's own paths and every error answer run here. The fast
path hands a connection over with :meth:`SlowPath.take`; when the task ends the connection
goes back to its callbacks (:meth:`ClientConnection.resume`), so this module knows nothing of
the fast path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TypeAlias

from mycelium._logger import get_logger
from mycelium.edge.connection import ClientConnection, Exchange
from mycelium.edge.http1 import ProtocolError, RequestHead, ResponseHead, parse_request_head
from mycelium.edge.relay import abort_on_error, client_fault, pump_body, relay_response, settle
from mycelium.edge.routes import APP_NAME, Endpoint, route_target
from mycelium.edge.state import IDEMPOTENT, EdgeState
from mycelium.edge.tunnel import Tunnel, switch_error, switch_head, upgrade_of
from mycelium.edge.upstream import Upstream, read_response_head

__all__ = ["Handoff", "SlowPath"]

log = get_logger(__name__)

Handoff: TypeAlias = tuple[RequestHead, Sequence[Endpoint] | None] | Exchange | None
"""Where the fast path left a request it hands over.

``None``: nothing taken from the buffer yet (the task reads, and answers a bad head); a
``(head, order)`` pair: parsed, not sent (``order`` is given when already routed); an
:class:`Exchange`: sent upstream, the response still to be read and relayed.
"""


class SlowPath:
    """Per-request tasks over the shared :class:`EdgeState`.

    Args:
        state: The edge's state (its config, metrics, balancer and pool are fixed for its
            lifetime, so they are bound here once).
    """

    def __init__(self, state: EdgeState) -> None:
        self.state = state
        self.loop = state.loop
        self.config = state.config
        self.metrics = state.metrics
        self.balancer = state.balancer
        self.pool = state.pool

    def take(self, client: ClientConnection, work: Handoff) -> None:
        """Serve the request in a task on ``client``; the connection's callbacks stay idle.

        Args:
            client: A connection nobody is working on (no task, no fast exchange).
            work: How far the fast path got (see :data:`Handoff`).
        """
        if isinstance(work, Exchange):
            client.upstream = work.up
            client.task = self.loop.create_task(self._serve_rest(client, work))
        else:
            client.task = self.loop.create_task(self._serve(client, work))

    async def _serve(self, client: ClientConnection,
                     first: tuple[RequestHead, Sequence[Endpoint] | None] | None) -> None:
        """Run one request in a task, then give the connection back to the callbacks."""
        keep = False
        req: RequestHead | None = None
        started = time.monotonic()
        client.status = client.sent_bytes = client.retries = 0
        client.routed_app = client.instance = None
        try:
            if first is None:
                try:
                    head = await self._read_head(client)
                except ProtocolError as exc:
                    self.state.error(client, exc.status, str(exc), "", close=True)
                    return
                if head is None:
                    return
                first = (head, None)
                started = time.monotonic()
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
            if self.state.access is not None:
                self.state.log_access(client, req, started)
            self._task_done(client, keep)

    async def _serve_rest(self, client: ClientConnection, ex: Exchange) -> None:
        """Finish a fast exchange whose response needs streaming."""
        keep = False
        up = ex.up
        client.status = client.sent_bytes = client.retries = 0
        client.routed_app, client.instance = ex.app, ex.ep.instance
        try:
            self.metrics.active += 1
            try:
                try:
                    resp = await read_response_head(up, self.config.read_timeout)
                except TimeoutError:
                    self.metrics.upstream_failure(ex.app)
                    self.state.outcome(ex.app, ex.ep, False, len(ex.order))
                    self.state.error(client, 504, f"upstream {ex.ep.url} timed out", ex.app,
                                close=True)
                    return
                except (ConnectionError, ProtocolError, OSError) as exc:
                    self.metrics.upstream_failure(ex.app)
                    self.state.outcome(ex.app, ex.ep, False, len(ex.order))
                    self.state.error(client, 502, f"upstream {ex.ep.url} failed: {exc}", ex.app,
                                close=True)
                    return
                self.balancer.succeeded(ex.ep)
                self.state.outcome(ex.app, ex.ep, resp.status < 500 or bool(ex.ep.digest),
                                   len(ex.order))
                self.metrics.observe(ex.app, time.monotonic() - ex.started)
                self.metrics.request(ex.app, resp.status)
                if ex.ep.digest:
                    self.state.answers.count(ex.app, ex.ep.digest, resp.status)
                client.status = resp.status
                keep, client.sent_bytes = await relay_response(
                    client, ex.req, up, resp, None, self.config, self.state.edge_line,
                    ex.req.keep_alive and not self.state.draining, self.pool,
                    (ex.prefix, ex.ep.address) if ex.prefix else None)
                client.upstream = None  # pooled or closed by relay_response
            finally:
                self.metrics.active -= 1
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            client.abort()
        except Exception:  # a bug must cost one connection, never the edge
            log.exception("edge: unexpected error serving %s", client.peer)
            client.abort()
        finally:
            if self.state.access is not None:
                self.state.log_access(client, ex.req, ex.started)
            self._task_done(client, keep)

    async def _read_head(self, client: ClientConnection) -> RequestHead | None:
        """Read one request head; ``None`` on a clean close or an idle timeout.

        Raises:
            ProtocolError: Malformed, oversized (431) or too slow (408) head.
        """
        buf = client.buf
        limit = self.config.max_header_bytes
        loop = self.loop
        started = client.head_started  # from the accept, or from the first byte of this head
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
            if buf and not started:
                started = loop.time()
            if started:
                timeout = started + self.config.header_timeout - loop.time()
                if timeout <= 0:
                    if not buf:
                        return None
                    raise ProtocolError("request head too slow", 408)
            else:
                timeout = self.config.keepalive_timeout
            try:
                await client.wait_more(timeout)
            except TimeoutError:
                if not buf:
                    return None
                raise ProtocolError("request head too slow", 408) from None

    # -- one request ------------------------------------------------------------------------------
    async def _handle(self, client: ClientConnection, req: RequestHead,
                      order: Sequence[Endpoint] | None = None) -> bool:
        """Answer one request; return whether the client connection may carry another.

        ``order`` is given when the dispatcher already routed the request.
        """
        if order is not None:
            app, target, prefix = route_target(self.state.routes, req.host, req.target) or (
                "", "/", b"")
            return await self._proxy(client, req, app, target, order, prefix)
        has_body = req.chunked or bool(req.content_length)
        reusable = req.keep_alive and not has_body  # an unread body forces a close on errors
        target = req.target
        if target.startswith("/_mycelium/"):
            return self._own(client, req, reusable)
        parts = route_target(self.state.routes, req.host, target)
        if parts is None:
            self.state.error(client, 400, "request target must start with /", "", close=True)
            return False
        app, upstream_target, prefix = parts
        if not APP_NAME.match(app):
            self.state.error(client, 400 if app else 404, f"bad app name {app[:64]!r}", "",
                        close=not reusable)
            return reusable
        limit = self.config.max_body_bytes
        if limit is not None and req.content_length is not None and req.content_length > limit:
            self.state.error(client, 413, "request body too large", app, close=True)
            return False
        route = self.state.routes.get(app)
        if route is None:
            self.state.error(client, 404, f"unknown app {app!r}", "", close=not reusable)
            return reusable
        if not route.endpoints and route.hold:  # scaled to zero: wait while it wakes
            held = await self.state.holds.wait(app, lambda: self.state.routes)
            if isinstance(held, int):
                why = ("too many requests waiting" if held == 503 else
                       f"no instance Ready within {self.state.holds.timeout:g}s")
                self.state.error(client, held, f"app {app!r} is waking up: {why}", app,
                                 close=not reusable)
                return reusable
            route = held
        if not route.endpoints:
            self.state.error(client, 503, f"app {app!r} has no ready endpoint", app,
                        close=not reusable)
            return reusable
        return await self._proxy(client, req, app, upstream_target, self.balancer.order(route),
                                 prefix)

    def _own(self, client: ClientConnection, req: RequestHead, reusable: bool) -> bool:
        """Serve the edge's own ``/_mycelium/...`` paths."""
        path = req.target.partition("?")[0]
        if req.method not in ("GET", "HEAD"):
            self.state.error(client, 405 if path in ("/_mycelium/health", "/_mycelium/metrics")
                        else 404, "method not allowed", "", close=not reusable)
            return reusable
        if path == "/_mycelium/health":
            body, ctype = b'{"status":"ok"}', b"application/json"
        elif path == "/_mycelium/metrics":
            body, ctype = self.metrics.render().encode(), b"text/plain; version=0.0.4"
        else:
            self.state.error(client, 404, "no such edge path", "", close=not reusable)
            return reusable
        self.state.send_own(client, 200, b"" if req.method == "HEAD" else body, ctype,
                       not reusable)
        self.metrics.request("", 200)
        return reusable and not self.state.draining

    async def _proxy(self, client: ClientConnection, req: RequestHead, app: str, target: str,
                     order: Sequence[Endpoint], prefix: bytes) -> bool:
        """Send the request upstream (with retries) and stream the response back.

        ``prefix`` is ``/APP`` for a path route, empty for a host route.
        """
        has_body = req.chunked or bool(req.content_length)
        asked = upgrade_of(req)
        may_resend = not has_body and req.method in IDEMPOTENT
        pump: asyncio.Task[None] | None = None
        up: Upstream | None = None
        resp: ResponseHead | None = None
        timed_out = False
        failure = "no endpoint could be reached"
        attempt = 0
        started = 0.0
        tries = list(order)
        i = 0
        client.routed_app = app
        while i < len(tries):
            ep = tries[i]
            if attempt:
                self.metrics.retry(app)
            client.retries = attempt
            client.instance = ep.instance
            attempt += 1
            try:
                up = client.upstream = await self.pool.acquire(ep)
            except (OSError, TimeoutError) as exc:
                timed_out = isinstance(exc, TimeoutError)
                failure = f"upstream {ep.url} unreachable: {exc.__class__.__name__}"
                self.balancer.failed(ep)
                self.state.outcome(app, ep, False, len(order))
                self.metrics.upstream_failure(app)
                i += 1
                continue
            reused = up.reused
            started = time.monotonic()
            try:
                up.write(self.state.upstream_head(client, req, target, ep, prefix, asked))
                if has_body:
                    if req.expect_continue:
                        client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    pump = client.pump = self.loop.create_task(
                        pump_body(client, up, req, self.config))
                    pump.add_done_callback(abort_on_error(up))
                resp = await read_response_head(up, self.config.read_timeout, asked is not None)
            except TimeoutError:
                up.abort()
                if client_fault(pump) is None and pump is not None:
                    await settle(pump)
                if client_fault(pump) is not None:
                    return self._pump_failed(client, pump, app)
                self.metrics.upstream_failure(app)
                self.state.outcome(app, ep, False, len(order))
                self.state.error(client, 504, f"upstream {ep.url} timed out", app, close=True)
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
                self.state.outcome(app, ep, False, len(order))
                failure = f"upstream {ep.url} failed: {exc or exc.__class__.__name__}"
                if may_resend and isinstance(exc, ConnectionError):
                    i += 1
                    continue
                self.state.error(client, 502, failure, app, close=True)
                return False
            break
        if resp is None or up is None:
            reusable = req.keep_alive and not has_body
            self.state.error(client, 504 if timed_out else 502, failure, app, close=not reusable)
            return reusable
        if resp.status == 101:
            return await self._switch(client, app, ep, up, resp, asked)
        self.balancer.succeeded(ep)
        self.state.outcome(app, ep, resp.status < 500 or bool(ep.digest), len(order))
        self.metrics.observe(app, time.monotonic() - started)
        self.metrics.request(app, resp.status)
        if ep.digest:
            self.state.answers.count(app, ep.digest, resp.status)
        client.status = resp.status
        keep, client.sent_bytes = await relay_response(
            client, req, up, resp, pump, self.config, self.state.edge_line,
            req.keep_alive and not self.state.draining, self.pool,
            (prefix, ep.address) if prefix else None)
        return keep

    async def _switch(self, client: ClientConnection, app: str, ep: Endpoint, up: Upstream,
                      resp: ResponseHead, asked: bytes | None) -> bool:
        """Tunnel an upgraded connection after a 101 the edge asked for (else 502)."""
        why = switch_error(resp, asked)
        if why is not None:
            up.abort()
            self.metrics.upstream_failure(app)
            self.state.error(client, 502, f"upstream {ep.url}: {why}", app, close=True)
            return False
        self.balancer.succeeded(ep)
        self.metrics.request(app, 101)
        client.status = 101
        client.write(switch_head(resp, self.state.edge_line))
        client.upstream = None  # the tunnel owns it now
        await self.state.tunnels.run(Tunnel(client, up, app, ep, self.config.tunnel_idle_timeout,
                                            self.config.send_timeout))
        return False

    def _pump_failed(self, client: ClientConnection, pump: asyncio.Task[None] | None,
                     app: str) -> bool:
        """Answer a request whose body the client spoiled (or just drop a vanished client)."""
        fault = client_fault(pump)
        if fault is not None and fault.status is not None:
            self.state.error(client, fault.status, str(fault), app, close=True)
        else:
            client.abort()
        return False

    def _task_done(self, client: ClientConnection, keep: bool) -> None:
        """A request task ended: clean up, then close or go back to callbacks."""
        up, pump = client.upstream, client.pump
        client.upstream = client.pump = None
        client.task = None
        if pump is not None and not pump.done():
            pump.cancel()
        if up is not None:  # the request was cut short: its upstream is mid-exchange
            up.abort()
        if not keep or self.state.draining or client.closed:
            client.close()
            return
        client.resume()
