"""How busy each app is at the edge: mean concurrent requests over the last second (or over
the last half second, when that is more).

By Little's law the mean number of requests in flight over a window is the time they spent
upstream within it divided by its length; the edge already sums each app's upstream time
(its latency histogram), so :class:`LoadMeter` only differences two samples of those totals
one second apart. No hook on the request path is needed. A request counts once its response
head arrives, so a long request shows up late: fine for scaling, whose steps take seconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from mycelium.messages import AppLoad

__all__ = ["SHORT", "WINDOW", "LoadMeter"]

WINDOW = 1.0
"""Seconds the in-flight mean is taken over."""

SHORT = 0.5
"""Seconds of the short mean: the larger of the two is reported, so that a step up in load
shows within half a second (autoscaling goes up at once) while a drop still takes the whole
window (and the scaler's quiet period) to show."""


class LoadMeter:
    """Turns samples of ``app → (requests, upstream seconds)`` totals into load reports."""

    def __init__(self, window: float = WINDOW) -> None:
        self._window = window
        self._samples: deque[tuple[float, Mapping[str, tuple[int, float]]]] = deque()
        self._last: dict[str, tuple[float, int]] = {}

    def sample(self, now: float, totals: Mapping[str, tuple[int, float]]) -> list[AppLoad]:
        """Take a sample; the apps to report (any traffic, or a load that changed).

        Args:
            now: Monotonic seconds.
            totals: app → (requests answered, seconds spent upstream) since the edge started.
        """
        previous = self._samples[-1][1] if self._samples else {}
        self._samples.append((now, dict(totals)))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()
        start, base = self._samples[0]
        span = max(now - start, 1e-6)
        s_start, s_base = next(((t, tot) for t, tot in reversed(self._samples)
                                if now - t >= SHORT), self._samples[0])
        s_span = max(now - s_start, 1e-6)
        out = []
        for app, (count, seconds) in totals.items():
            mean = max(0.0, seconds - base.get(app, (0, 0.0))[1]) / span
            short = max(0.0, seconds - s_base.get(app, (0, 0.0))[1]) / s_span
            in_flight = round(max(mean, short), 3) if start < now else 0.0
            arrived = count - previous.get(app, (0, 0.0))[0]
            report = (in_flight, arrived)
            if arrived or in_flight or self._last.get(app, (0.0, 0)) != report:
                out.append(AppLoad(app, in_flight, arrived))
            self._last[app] = report
        return out
