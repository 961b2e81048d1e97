"""Round-robin with passive health: pure decisions, a clock injected, no I/O.

An endpoint that refuses connections ``max_fails`` times within ``fail_timeout`` seconds is
skipped for ``fail_timeout`` seconds (nginx ``max_fails``/``fail_timeout``), before the fabric
has even noticed that its instance died. When every endpoint of an app is skipped they are all
tried anyway: a guess is better than a certain 502. Endpoints ejected as outliers (see
:mod:`mycelium.edge.ejection`) come after those, as a last resort.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

from mycelium.edge.routes import Endpoint, Route
from mycelium.edge.weights import WeightedCycle

__all__ = ["Balancer"]

_Key = tuple[str, int]


class Balancer:
    """Chooses the order in which a request tries an app's endpoints.

    Not thread-safe: it lives on the edge's event loop.

    Args:
        max_fails: Failures within the window that take an endpoint out of rotation.
        fail_timeout: The window, and how long the endpoint then stays out.
        clock: Monotonic seconds; injected for tests.
        ejected: URLs of endpoints ejected as outliers (a live view, e.g.
            :attr:`Ejector.ejected <mycelium.edge.ejection.Ejector.ejected>`).
    """

    def __init__(self, max_fails: int = 1, fail_timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 ejected: Collection[str] = ()) -> None:
        self._ejected = ejected
        self._max_fails = max_fails
        self._fail_timeout = fail_timeout
        self._clock = clock
        self._next: dict[str, int] = {}
        self._fails: dict[_Key, tuple[int, float]] = {}
        self._down_until: dict[_Key, float] = {}
        self._smooth: dict[str, tuple[tuple[Endpoint, ...], WeightedCycle]] = {}

    def order(self, route: Route) -> Sequence[Endpoint]:
        """Return the endpoints to try, first choice first.

        Round-robin over the app's endpoints; endpoints passively marked down come after the
        others, ejected ones last (they are still tried when nothing else is left).

        Args:
            route: The app's route; its endpoints must not be empty.
        """
        eps = route.endpoints
        n = len(eps)
        if n == 1 and not self._down_until and not self._ejected:
            return eps  # one endpoint, nothing skipped: no rotation to keep
        if route.weighted:  # a canary: smooth weighted round-robin
            i = self._weighted(route)
        else:
            i = self._next.get(route.app, 0)
            self._next[route.app] = (i + 1) % n if n else 0
        rotated = eps if n <= 1 or i % n == 0 else eps[i % n:] + eps[: i % n]
        ejected = self._ejected
        if not self._down_until and not ejected:
            return rotated
        now = self._clock()
        up: list[Endpoint] = []
        down: list[Endpoint] = []
        out: list[Endpoint] = []
        for ep in rotated:
            if ep.url in ejected:
                out.append(ep)
                continue
            until = self._down_until.get((ep.host, ep.port))
            if until is None or until <= now:
                up.append(ep)
            else:
                down.append(ep)
        return up + down + out

    def _weighted(self, route: Route) -> int:
        held = self._smooth.get(route.app)
        if held is None or held[0] is not route.endpoints:
            held = (route.endpoints, WeightedCycle([max(1, ep.weight) for ep in route.endpoints]))
            self._smooth[route.app] = held
        return held[1].pick()

    def is_down(self, endpoint: Endpoint) -> bool:
        """Tell whether ``endpoint`` is currently skipped."""
        until = self._down_until.get((endpoint.host, endpoint.port))
        return until is not None and until > self._clock()

    def failed(self, endpoint: Endpoint) -> None:
        """Record a connection failure (refused, reset before a byte, connect timeout)."""
        key = (endpoint.host, endpoint.port)
        now = self._clock()
        count, since = self._fails.get(key, (0, now))
        if now - since > self._fail_timeout:
            count, since = 0, now
        count += 1
        if count >= self._max_fails:
            self._down_until[key] = now + self._fail_timeout
            self._fails.pop(key, None)
        else:
            self._fails[key] = (count, since)

    def succeeded(self, endpoint: Endpoint) -> None:
        """Record a success: the endpoint is back in rotation with a clean slate."""
        if self._down_until or self._fails:  # else nothing to clean (the usual case)
            key = (endpoint.host, endpoint.port)
            self._down_until.pop(key, None)
            self._fails.pop(key, None)

    def forget(self, keep: set[_Key]) -> None:
        """Drop state about endpoints that left the routing table (bounded memory)."""
        for table in (self._fails, self._down_until):
            for key in [k for k in table if k not in keep]:
                del table[key]
