"""Requests held for an app scaled to zero, until its first instance is Ready.

A request for an app whose route says ``hold`` (``deploy --min 0``) and that has no Ready
endpoint waits here instead of getting 503: the first one of a wave asks the mesh to wake the
app (one start however many requests arrive; the fabric ignores repeats), and every waiter is
released with the route as soon as a routing push brings an endpoint. A request waits at most
``hold_timeout`` seconds (then 504); at most ``hold_max`` wait per app (beyond, 503 at once),
so a burst for a sleeping app cannot exhaust the edge. Runs on the edge's loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from mycelium.edge.routes import Route, RouteTable

__all__ = ["HoldOutcome", "Holds"]

HoldOutcome = Route | int
"""The route to proxy on, or the status to answer (503: too many held, 504: timed out)."""


class Holds:
    """The held requests of every app on one edge.

    Args:
        loop: The edge's loop.
        timeout: ``[edge] hold_timeout``: seconds a request may wait.
        limit: ``[edge] hold_max``: requests held per app at most.
        wake: Told the app's name when a wave of held requests starts (any thread-safe call).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, limit: int,
                 wake: Callable[[str], None] | None) -> None:
        self._loop = loop
        self.timeout = timeout
        self.limit = limit
        self._wake = wake
        self._waiting: dict[str, list[asyncio.Future[Route]]] = {}

    def held(self, app: str) -> int:
        """Requests of ``app`` waiting now."""
        return len(self._waiting.get(app, ()))

    async def wait(self, app: str, routes: Callable[[], RouteTable]) -> HoldOutcome:
        """Hold one request of ``app`` until a Ready endpoint appears.

        Args:
            app: The app.
            routes: The current routing snapshot (looked at again once registered, so a push
                that landed meanwhile is not missed).
        """
        waiting = self._waiting.setdefault(app, [])
        if len(waiting) >= self.limit:
            return 503
        future: asyncio.Future[Route] = self._loop.create_future()
        waiting.append(future)
        try:
            route = routes().get(app)
            if route is not None and route.endpoints:
                return route
            if len(waiting) == 1 and self._wake is not None:
                self._wake(app)
            try:
                return await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                return 504
        finally:
            with contextlib.suppress(ValueError):
                waiting.remove(future)
            if not waiting:
                self._waiting.pop(app, None)

    def release(self, table: RouteTable) -> None:
        """A routing push: every held request whose app now has an endpoint goes on."""
        for app, waiting in list(self._waiting.items()):
            route = table.get(app)
            if route is None or not route.endpoints:
                continue
            for future in waiting:
                if not future.done():
                    future.set_result(route)
