"""Per-app request and error rates from samples of the edge's counters.

The edge counts every answered request by app and status code
(``mycelium_edge_requests_total{app,code}``); the dashboard samples that exposition every few
seconds and turns the differences into rates. Errors are the 5xx answers (the edge's 502/503/504
and the apps' own 5xx): a 4xx is the client's mistake, not the mesh's. Pure: the clock is the
caller's.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Counts", "RateHistory", "parse_requests"]

_LINE = re.compile(r'^mycelium_edge_requests_total\{([^}]*)\}\s+([0-9.eE+]+)\s*$', re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class Counts:
    """Cumulative requests and 5xx errors of one app."""

    requests: float = 0.0
    errors: float = 0.0


def parse_requests(text: str) -> dict[str, Counts]:
    """The request and error counters per app from a Prometheus text exposition.

    The edge's own paths and unknown apps (``app=""``) are left out.
    """
    totals: dict[str, list[float]] = {}
    for labels, value in _LINE.findall(text):
        fields = dict(_LABEL.findall(labels))
        app = fields.get("app", "")
        if not app:
            continue
        try:
            n = float(value)
        except ValueError:
            continue
        acc = totals.setdefault(app, [0.0, 0.0])
        acc[0] += n
        if fields.get("code", "").startswith("5"):
            acc[1] += n
    return {app: Counts(req, err) for app, (req, err) in totals.items()}


class RateHistory:
    """The last ``window`` seconds of per-app rates, one point per sample interval.

    Args:
        window: Seconds of points kept.
    """

    def __init__(self, window: float = 300.0) -> None:
        self.window = window
        self._last: tuple[float, Mapping[str, Counts]] | None = None
        self._points: dict[str, deque[tuple[float, float, float]]] = {}

    def add(self, now: float, counts: Mapping[str, Counts]) -> None:
        """Record one sample of the cumulative counters taken at ``now``.

        A counter that went down (the edge restarted and began again at 0) counts from 0.
        """
        if self._last is not None:
            then, before = self._last
            dt = now - then
            if dt > 0:
                for app, c in counts.items():
                    prev = before.get(app, Counts())
                    d_req = c.requests - prev.requests if c.requests >= prev.requests \
                        else c.requests
                    d_err = c.errors - prev.errors if c.errors >= prev.errors else c.errors
                    points = self._points.setdefault(app, deque())
                    points.append((now, d_req / dt, d_err / dt))
        self._last = (now, dict(counts))
        horizon = now - self.window
        for app in list(self._points):
            points = self._points[app]
            while points and points[0][0] < horizon:
                points.popleft()
            if not points:
                del self._points[app]

    def latest(self) -> dict[str, list[float]]:
        """The newest point of each app that got one at the last sample (what a watching
        page appends; it drops points older than the window itself)."""
        if self._last is None:
            return {}
        now = self._last[0]
        return {app: [round(t, 3), round(r, 3), round(e, 3)]
                for app, points in sorted(self._points.items())
                for t, r, e in (points[-1],) if t == now}

    def series(self) -> dict[str, list[list[float]]]:
        """``{app: [[ts, requests_per_s, errors_per_s], ...]}``, oldest first."""
        return {app: [[round(t, 3), round(r, 3), round(e, 3)] for t, r, e in points]
                for app, points in sorted(self._points.items())}
