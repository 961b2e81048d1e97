"""Passive outlier ejection: an endpoint that keeps failing leaves its app's rotation a while.

An endpoint with ``after`` consecutive failures (a connect error, an upstream timeout, a
broken or 5xx answer) is ejected for ``base_time * n`` seconds, ``n`` being how often it was
ejected so far, then returns. Never more than ``max_percent`` of an app's endpoints are out
at once (rounded down; one endpoint always stays): when most of an app fails, the fault is
more likely the app's than the endpoints', and ejecting them all would turn errors into 503s.

The decisions are pure (:func:`ejection_cap`, :func:`decide`); :class:`Ejector` applies them to
its tables, with the time passed in, and returns what changed as :class:`EjectionEvent` values.
It consumes outcomes one by one and keeps only counts, so several edge worker processes can
later share one: each forwards its outcomes (app, endpoint, ok) to the edge actor, which runs
the Ejector and pushes the set of ejected endpoints along with the routes.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from mycelium.edge.routes import Endpoint

__all__ = ["EjectionEvent", "EjectionPolicy", "Ejector", "decide", "ejection_cap"]


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    """``[edge] eject_after``, ``eject_time`` and ``eject_max``.

    Attributes:
        after: Consecutive failures that eject an endpoint (>= 1).
        base_time: Seconds of the first ejection; the n-th lasts n times as long.
        max_percent: Most of an app's endpoints out at once, in percent (0 turns it off).
    """

    after: int = 5
    base_time: float = 30.0
    max_percent: int = 50


@dataclass(frozen=True, slots=True)
class EjectionEvent:
    """An endpoint left its app's rotation (``endpoint_ejected``) or came back.

    Attributes:
        event: ``"endpoint_ejected"`` or ``"endpoint_returned"``.
        app: The app.
        instance: The endpoint's instance id.
        url: The endpoint's URL.
        count: How many times it was ejected so far (this one included).
        seconds: How long this ejection lasts (``endpoint_ejected`` only, else 0).
    """

    event: str
    app: str
    instance: str
    url: str
    count: int
    seconds: float = 0.0


def ejection_cap(total: int, max_percent: int) -> int:
    """How many of an app's ``total`` endpoints may be ejected at once.

    ``max_percent`` of them, rounded down, and never all: at least one is always kept.
    """
    if total <= 1:
        return 0
    return max(0, min(total * max_percent // 100, total - 1))


def decide(failures: int, ok: bool, out_in_app: int, total: int,
           policy: EjectionPolicy) -> tuple[int, bool]:
    """One outcome of an endpoint that is in rotation: its next failure count, and whether to
    eject it now.

    Args:
        failures: Its consecutive failures so far.
        ok: Whether this answer was a success (a non-5xx answer).
        out_in_app: Endpoints of its app ejected right now.
        total: Endpoints its app has.
        policy: The thresholds.

    Returns:
        ``(failures, eject)``: an ejected endpoint starts again from zero failures; one that
        reached the threshold while the app's cap is full stays in with its count (it is
        ejected on its next failure once another endpoint returned).
    """
    if ok:
        return 0, False
    failures += 1
    if failures >= policy.after and out_in_app < ejection_cap(total, policy.max_percent):
        return 0, True
    return failures, False


class Ejector:
    """Counts consecutive failures per endpoint and ejects and returns endpoints.

    Not thread-safe: it lives on the edge's loop. Time is passed in (``now``, monotonic
    seconds), so it is tested without a clock.

    Args:
        policy: The thresholds.
    """

    def __init__(self, policy: EjectionPolicy) -> None:
        self.policy = policy
        self._failures: dict[str, int] = {}  # url → consecutive failures (only if > 0)
        self._count: dict[str, int] = {}  # url → ejections so far
        self._out: dict[str, tuple[str, str, float]] = {}  # url → (app, instance, until)
        self._out_per_app: dict[str, int] = {}

    @property
    def ejected(self) -> Collection[str]:
        """URLs of the endpoints out of rotation right now (a live view)."""
        return self._out.keys()

    @property
    def failing(self) -> Mapping[str, int]:
        """Consecutive failures of the endpoints that have some (a live view; empty, it lets
        a caller skip :meth:`outcome` for a success)."""
        return self._failures

    @property
    def out_per_app(self) -> Mapping[str, int]:
        """Endpoints out of rotation now, by app (a live view)."""
        return self._out_per_app

    def outcome(self, app: str, ep: Endpoint, ok: bool, total: int,
                now: float) -> EjectionEvent | None:
        """Record one outcome of a request to ``ep`` (one of ``app``'s ``total`` endpoints).

        Returns:
            The ejection it caused, if any.
        """
        url = ep.url
        if ok and not self._failures:
            return None  # the hot path: nothing is failing
        if url in self._out:
            return None  # already out (a request that was sent before it was ejected)
        failures, eject = decide(self._failures.get(url, 0), ok, self._out_per_app.get(app, 0),
                                 total, self.policy)
        if failures:
            self._failures[url] = failures
        else:
            self._failures.pop(url, None)
        if not eject:
            return None
        count = self._count.get(url, 0) + 1
        self._count[url] = count
        seconds = self.policy.base_time * count
        self._out[url] = (app, ep.instance, now + seconds)
        self._out_per_app[app] = self._out_per_app.get(app, 0) + 1
        return EjectionEvent("endpoint_ejected", app, ep.instance, url, count, seconds)

    def shared(self) -> tuple[dict[str, int], dict[str, tuple[str, str]]]:
        """What edge workers mirror: the failure counts, and the ejected endpoints' app and
        instance by URL."""
        return dict(self._failures), {url: (app, inst) for url, (app, inst, _) in
                                      self._out.items()}

    def mirror(self, failing: Mapping[str, int], out: Mapping[str, Sequence[str]]) -> None:
        """Take another Ejector's :meth:`shared` state as this one's, in place (the live views
        stay valid). An edge worker mirrors the edge actor's Ejector, which alone decides;
        the worker only forwards its outcomes."""
        self._failures.clear()
        self._failures.update(failing)
        self._out.clear()
        self._out_per_app.clear()
        for url, (app, instance) in out.items():
            self._out[url] = (app, instance, math.inf)  # it returns when the actor says so
            self._out_per_app[app] = self._out_per_app.get(app, 0) + 1

    def release(self, now: float) -> list[EjectionEvent]:
        """Return every endpoint whose ejection is over; what came back."""
        if not self._out:
            return []
        back = [url for url, (_app, _inst, until) in self._out.items() if until <= now]
        return [self._return(url) for url in back]

    def _return(self, url: str) -> EjectionEvent:
        app, instance, _until = self._out.pop(url)
        left = self._out_per_app.get(app, 1) - 1
        if left:
            self._out_per_app[app] = left
        else:
            self._out_per_app.pop(app, None)
        return EjectionEvent("endpoint_returned", app, instance, url, self._count.get(url, 0))

    def forget(self, keep: Collection[str]) -> None:
        """Drop every count of endpoints no longer routed (``keep``: the URLs still are).

        An ejected endpoint that left the table is dropped silently: it is gone, not back.
        """
        for table in (self._failures, self._count):
            for url in [u for u in table if u not in keep]:
                del table[url]
        for url in [u for u in self._out if u not in keep]:
            self._return(url)
