"""What each digest of an app answered through this edge, over a sliding window.

While an app runs a canary its endpoints carry their digest, and the edge counts every upstream
answer per (app, digest) in one-second buckets of a :data:`WINDOW`-second ring. The edge actor
sends the totals to the fabric every second, which judges the canary by them. A 5xx counts
whether or not outlier ejection has since taken the endpoint out of rotation: what it
answered stays in the window.

Counted on the edge's event loop only; :meth:`AnswerWindow.snapshot` may run on another thread
(it copies before it reads, and a count it misses is in the next second's report).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mycelium.messages import DigestAnswers

__all__ = ["WINDOW", "AnswerWindow"]

WINDOW = 30
"""Seconds of answers counted."""


class AnswerWindow:
    """Per (app, digest) answers and 5xx in one-second buckets.

    Args:
        window: Seconds in the window.
        clock: Seconds (monotonic); injected for tests.
    """

    def __init__(self, window: int = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._rings: dict[tuple[str, str], list[list[int]]] = {}

    def count(self, app: str, digest: str, status: int) -> None:
        """Count one answer of ``digest`` (a 5xx ``status`` is an error)."""
        second = int(self._clock())
        ring = self._rings.get((app, digest))
        if ring is None:
            ring = self._rings[(app, digest)] = [[-1, 0, 0] for _ in range(self._window)]
        bucket = ring[second % self._window]
        if bucket[0] != second:
            bucket[0], bucket[1], bucket[2] = second, 0, 0
        bucket[1] += 1
        if status >= 500:
            bucket[2] += 1

    def snapshot(self) -> tuple[DigestAnswers, ...]:
        """The totals over the window, by (app, digest); rings with nothing recent are dropped."""
        now = int(self._clock())
        out = []
        for key, ring in list(self._rings.items()):
            answered = errors = 0
            for second, n, bad in [tuple(b) for b in ring]:
                if 0 <= now - second < self._window:
                    answered += n
                    errors += bad
            if answered:
                out.append(DigestAnswers(key[0], key[1], answered, errors))
            elif all(now - b[0] >= self._window for b in ring):
                self._rings.pop(key, None)
        return tuple(sorted(out, key=lambda a: (a.app, a.digest)))
