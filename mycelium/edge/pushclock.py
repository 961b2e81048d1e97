"""How long a routing snapshot takes to reach every edge worker process (pure: no clock).

The edge actor sends each snapshot to every worker and each worker confirms the version it
applied; a snapshot is served by the whole edge once the oldest confirmation among the running
workers reaches its version. The seconds in between are what a deploy, a kill or a drain waits
before no worker routes the old way (``bench/edge.py`` reports their p99).
"""

from __future__ import annotations

from collections import deque

__all__ = ["PUSHES_KEPT", "PushClock"]

PUSHES_KEPT = 1000
"""Recent pushes whose time to reach every worker is kept."""


class PushClock:
    """The time from sending each snapshot until every running worker applied it."""

    def __init__(self, kept: int = PUSHES_KEPT) -> None:
        self._pending: dict[int, float] = {}
        self._seconds: deque[float] = deque(maxlen=kept)

    def sent(self, version: int, now: float) -> None:
        """Snapshot ``version`` went out at ``now`` (monotonic seconds)."""
        self._pending[version] = now

    def served(self, version: int, now: float) -> None:
        """Every running worker now serves ``version`` or a later one."""
        for done in [v for v in self._pending if v <= version]:
            self._seconds.append(max(0.0, now - self._pending.pop(done)))

    def seconds(self) -> list[float]:
        """Seconds each recent push took to reach the whole edge, oldest first."""
        return list(self._seconds)
