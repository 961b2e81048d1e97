"""The edge's request core: one shared state, a fast path of callbacks, a slow path of tasks.

:class:`EdgeProxy` owns the :class:`EdgeState` and wires its two collaborators: the
:class:`FastPath` (every client connection's handler) and the :class:`SlowPath` it hands the
rest to. The proxy itself does the lifecycle: the one sweeper task that enforces the timeouts
of connections driven by callbacks, draining, and pruning endpoints no longer routed. Runs
entirely on the edge's own event loop thread.
"""

from __future__ import annotations

import asyncio

from mycelium.edge.accesslog import LineSink
from mycelium.edge.config import EdgeConfig
from mycelium.edge.connection import ClientConnection
from mycelium.edge.fastpath import FastPath
from mycelium.edge.metrics import EdgeMetrics
from mycelium.edge.routes import RouteTable
from mycelium.edge.slowpath import SlowPath
from mycelium.edge.state import EdgeState, OutcomeSink
from supervisors.reports import Reporter

__all__ = ["EdgeProxy"]


class EdgeProxy:
    """The request-handling core, bound to one event loop.

    Args:
        config: Limits, timeouts and the edge id.
        loop: The loop every connection runs on.
        reporter: Receives the edge's supervision-log records (endpoint ejections).
        access_sink: Where access log lines go instead of the home's access log.
        outcome_sink: In an edge worker, where ejection outcomes go (see EdgeState).
    """

    def __init__(self, config: EdgeConfig, loop: asyncio.AbstractEventLoop,
                 reporter: Reporter | None = None, access_sink: LineSink | None = None,
                 outcome_sink: OutcomeSink | None = None) -> None:
        self.state = EdgeState(config, loop, reporter, access_sink, outcome_sink)
        self.slow = SlowPath(self.state)
        self.fast = FastPath(self.state, self.slow)
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def routes(self) -> RouteTable:
        """The routing snapshot requests are routed with."""
        return self.state.routes

    @routes.setter
    def routes(self, table: RouteTable) -> None:
        self.state.routes = table  # one attribute store: atomic for the loop thread

    @property
    def metrics(self) -> EdgeMetrics:
        """The edge's counters (``/_mycelium/metrics``)."""
        return self.state.metrics

    def protocol(self) -> ClientConnection:
        """Protocol factory for ``loop.create_server``."""
        return ClientConnection(self.state.loop, self.fast)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the sweeper that enforces timeouts on connections driven by callbacks."""
        self._sweeper = self.state.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Every tick, time out idle, slow-head and fast-path connections (no timer each).

        A connection is closed once ``header_timeout`` passed since its accept (or since the
        first byte of a later request) without a complete head, whether or not it trickles
        bytes meanwhile; an idle kept-alive one after ``keepalive_timeout``.
        """
        state, fast = self.state, self.fast
        cfg = state.config
        tick = max(0.05, min(0.5, cfg.header_timeout / 4, cfg.read_timeout / 4,
                             cfg.keepalive_timeout / 4))
        access = state.access
        while True:
            await asyncio.sleep(tick)
            if access is not None:
                access.flush()
            state.release_ejections()
            now = state.loop.time()
            for client in list(state.clients):
                if client.task is not None:
                    continue  # its own coroutine keeps its own deadlines
                if fast.expire(client, now):
                    continue
                if client.head_started:  # a head is due: counted from accept or first byte
                    if now - client.head_started > cfg.header_timeout:
                        if client.buf:
                            state.error(client, 408, "request head too slow", "", close=True)
                            state.log_access(client, None, client.head_started)
                        client.close()
                elif not client.buf and now - client.last_active > cfg.keepalive_timeout:
                    client.close()

    async def drain(self, grace: float) -> None:
        """Stop taking requests, close idle connections, wait for in-flight ones up to ``grace``."""
        state = self.state
        state.draining = True
        for client in list(state.clients):
            if client.task is None and client.exchange is None:
                client.close()
        loop = state.loop
        deadline = loop.time() + grace
        while loop.time() < deadline and any(
                c.task is not None or c.exchange is not None for c in state.clients):
            await asyncio.sleep(0.02)  # shutdown only: a short poll beats per-request signalling
        for client in list(state.clients):
            client.abort()
        tasks = [c.task for c in state.clients if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
        state.pool.close_all()
        if state.access is not None:
            state.access.close()

    def prune(self, keep: set[tuple[str, int]]) -> None:
        """Forget health state and close pooled connections of endpoints no longer routed."""
        state = self.state
        state.balancer.forget(keep)
        state.pool.prune(keep)
        state.tunnels.routes_changed(keep)
        state.ejector.forget({ep.url for route in state.routes.values()
                              for ep in route.endpoints})
