"""Requests held for an app scaled to zero, until its first instance is Ready.

A request for an app whose route says ``hold`` (``deploy --min 0``) and that has no Ready
endpoint waits here instead of getting 503: the first one of a wave asks the mesh to wake the
app (one start however many requests arrive; the fabric ignores repeats), and every waiter is
released with the route as soon as a routing push brings an endpoint. A request waits at most
``hold_timeout`` seconds (then 504); at most ``hold_max`` wait per app (beyond, 503 at once),
so a burst for a sleeping app cannot exhaust the edge. Runs on the edge's loop only.

In an edge worker process the count that ``hold_max`` bounds is the whole edge's, so a worker
does not decide alone: its :class:`HoldGate` asks the edge actor for a place (one pipe round
trip, only for requests of a sleeping app), and the actor's :class:`HoldLedger` admits or
refuses it and wakes the app for the first request of a wave across every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Protocol

from mycelium.edge.routes import Route, RouteTable

__all__ = ["HoldGate", "HoldLedger", "HoldOutcome", "Holds"]

HoldOutcome = Route | int
"""The route to proxy on, or the status to answer (503: too many held, 504: timed out)."""


class HoldGate(Protocol):
    """Where an edge worker's held requests ask for their place (the edge actor's ledger).

    ``ask`` is answered later through :meth:`Holds.answer`; every asked ticket is left with
    ``leave`` once its request stops waiting, admitted or not.
    """

    def ask(self, app: str, ticket: int) -> None:
        """Ask for a place for request ``ticket`` of ``app`` (no wait: answered later)."""

    def leave(self, app: str, ticket: int) -> None:
        """Request ``ticket`` of ``app`` no longer waits."""


class HoldLedger:
    """The requests held across every worker of one edge (pure: the edge actor applies it).

    Args:
        limit: ``[edge] hold_max``: requests held per app at most, over all workers.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, set[tuple[int, int]]] = {}

    def ask(self, worker: int, app: str, ticket: int) -> tuple[bool, bool]:
        """A worker's request wants to wait: ``(admitted, wake)``, ``wake`` for the first
        request of a wave (nothing of ``app`` was held)."""
        held = self._held.setdefault(app, set())
        if (worker, ticket) in held:  # asked twice: the same place, no second wake
            return True, False
        if len(held) >= self.limit:
            return False, False
        held.add((worker, ticket))
        return True, len(held) == 1

    def leave(self, worker: int, app: str, ticket: int) -> None:
        """A request stopped waiting (an unknown ticket is ignored: a refused one)."""
        held = self._held.get(app)
        if held is not None:
            held.discard((worker, ticket))
            if not held:
                del self._held[app]

    def forget(self, worker: int) -> None:
        """A worker died: its requests wait no more."""
        for app in list(self._held):
            self._held[app] = {key for key in self._held[app] if key[0] != worker}
            if not self._held[app]:
                del self._held[app]

    def held(self, app: str) -> int:
        """Requests of ``app`` waiting now, over every worker."""
        return len(self._held.get(app, ()))


class Holds:
    """The held requests of every app on one edge.

    Args:
        loop: The edge's loop.
        timeout: ``[edge] hold_timeout``: seconds a request may wait.
        limit: ``[edge] hold_max``: requests held per app at most.
        wake: Told the app's name when a wave of held requests starts (any thread-safe call).
        gate: In an edge worker: the edge actor decides the limit and the wake instead
            (``limit`` and ``wake`` are then not used).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, limit: int,
                 wake: Callable[[str], None] | None, gate: HoldGate | None = None) -> None:
        self._loop = loop
        self.timeout = timeout
        self.limit = limit
        self._wake = wake
        self._gate = gate
        self._tickets = itertools.count(1)
        self._answers: dict[int, asyncio.Future[bool]] = {}
        self._waiting: dict[str, list[asyncio.Future[Route]]] = {}

    def held(self, app: str) -> int:
        """Requests of ``app`` waiting now (in this process)."""
        return len(self._waiting.get(app, ()))

    def answer(self, ticket: int, admitted: bool) -> None:
        """The gate's answer to request ``ticket`` (a late one, after its timeout, is dropped)."""
        future = self._answers.get(ticket)
        if future is not None and not future.done():
            future.set_result(admitted)

    async def wait(self, app: str, routes: Callable[[], RouteTable]) -> HoldOutcome:
        """Hold one request of ``app`` until a Ready endpoint appears.

        Args:
            app: The app.
            routes: The current routing snapshot (looked at again once registered, so a push
                that landed meanwhile is not missed).
        """
        waiting = self._waiting.setdefault(app, [])
        if self._gate is None and len(waiting) >= self.limit:
            return 503
        future: asyncio.Future[Route] = self._loop.create_future()
        waiting.append(future)
        ticket: int | None = None
        try:
            route = routes().get(app)
            if route is not None and route.endpoints:
                return route
            deadline = self._loop.time() + self.timeout
            if self._gate is not None:
                ticket = next(self._tickets)
                answer = self._answers[ticket] = self._loop.create_future()
                self._gate.ask(app, ticket)
                try:
                    admitted = await asyncio.wait_for(answer, self.timeout)
                except TimeoutError:
                    return 504
                if not admitted and not future.done():
                    return 503
            elif len(waiting) == 1 and self._wake is not None:
                self._wake(app)
            try:
                return await asyncio.wait_for(future, max(0.0, deadline - self._loop.time()))
            except TimeoutError:
                return 504
        finally:
            with contextlib.suppress(ValueError):
                waiting.remove(future)
            if not waiting:
                self._waiting.pop(app, None)
            if ticket is not None and self._gate is not None:
                self._answers.pop(ticket, None)
                self._gate.leave(app, ticket)

    def release(self, table: RouteTable) -> None:
        """A routing push: every held request whose app now has an endpoint goes on."""
        for app, waiting in list(self._waiting.items()):
            route = table.get(app)
            if route is None or not route.endpoints:
                continue
            for future in waiting:
                if not future.done():
                    future.set_result(route)
