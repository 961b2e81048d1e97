"""Routing snapshots on their way to every edge worker process (pure: no clock, no I/O).

The edge actor sends each snapshot to every worker and each worker confirms the version it
applied; a snapshot is served by the whole edge once the oldest confirmation among the running
workers reaches its version. The seconds in between are what a deploy, a kill or a drain waits
before no worker routes the old way (``bench/edge.py`` reports their p99), and until then an
endpoint left out of the latest snapshot may still be routed to by some worker (a draining
instance waits for :meth:`PushClock.may_route` to say no).
"""

from __future__ import annotations

from collections import deque

__all__ = ["PUSHES_KEPT", "PushClock"]

PUSHES_KEPT = 1000
"""Recent pushes whose time to reach every worker is kept."""


class PushClock:
    """The time from sending each snapshot until every running worker applied it."""

    def __init__(self, kept: int = PUSHES_KEPT) -> None:
        self._pending: dict[int, tuple[float, frozenset[str]]] = {}
        self._served: frozenset[str] = frozenset()  # the URLs every running worker serves
        self._seconds: deque[float] = deque(maxlen=kept)

    def sent(self, version: int, now: float, urls: frozenset[str] = frozenset()) -> None:
        """Snapshot ``version``, routing to ``urls``, went out at ``now`` (monotonic seconds)."""
        self._pending[version] = (now, urls)

    def served(self, version: int, now: float) -> None:
        """Every running worker now serves ``version`` or a later one."""
        for done in sorted(v for v in self._pending if v <= version):
            sent, self._served = self._pending.pop(done)
            self._seconds.append(max(0.0, now - sent))

    def may_route(self, url: str) -> bool:
        """Whether some running worker may still route to ``url``: it is in the snapshot all
        of them serve, or in one not yet applied everywhere."""
        return url in self._served or any(url in urls for _, urls in self._pending.values())

    def seconds(self) -> list[float]:
        """Seconds each recent push took to reach the whole edge, oldest first."""
        return list(self._seconds)
