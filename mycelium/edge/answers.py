"""What each digest of an app answered through this edge, over a sliding window.

While an app runs a canary its endpoints carry their digest, and the edge counts every upstream
answer per digest: one dict read and an increment or two per request, nothing else on the hot
path. Once a second the edge actor takes a :meth:`AnswerWindow.snapshot` (run on the edge's
event loop, like every count, so nothing here needs a lock): the second's counts join a ring of
the last :data:`WINDOW` seconds and the totals go to the fabric, which judges the canary by
them. A 5xx counts whether or not outlier ejection has since taken the endpoint out of
rotation: what it answered stays in the window.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mycelium.rollout_messages import DigestAnswers

__all__ = ["WINDOW", "AnswerWindow", "sum_answers"]

WINDOW = 30
"""Seconds of answers counted."""


class _Tally:
    """One digest's answers in one bucket (mutable: counted in place on the hot path)."""

    __slots__ = ("answered", "app", "errors")

    def __init__(self, app: str) -> None:
        self.app = app
        self.answered = 0
        self.errors = 0


class AnswerWindow:
    """Per-digest answers and 5xx, rolled into one bucket per snapshot.

    Args:
        window: Seconds in the window.
        clock: Seconds (monotonic), read at each snapshot; injected for tests.
    """

    def __init__(self, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._current: dict[str, _Tally] = {}  # digest → this bucket's tally
        self._past: deque[tuple[float, dict[str, _Tally]]] = deque()

    def count(self, app: str, digest: str, status: int) -> None:
        """Count one answer of ``digest`` of ``app`` (a 5xx ``status`` is an error)."""
        tally = self._current.get(digest)
        if tally is None:
            tally = self._current[digest] = _Tally(app)
        tally.answered += 1
        if status >= 500:
            tally.errors += 1

    def snapshot(self) -> tuple[DigestAnswers, ...]:
        """Close the current bucket; the totals over the window by (app, digest)."""
        now = self._clock()
        if self._current:
            self._past.append((now, self._current))
            self._current = {}
        while self._past and now - self._past[0][0] >= self._window:
            self._past.popleft()
        totals: dict[str, _Tally] = {}
        for _at, bucket in self._past:
            for digest, tally in bucket.items():
                total = totals.get(digest)
                if total is None:
                    total = totals[digest] = _Tally(tally.app)
                total.answered += tally.answered
                total.errors += tally.errors
        return tuple(sorted((DigestAnswers(t.app, digest, t.answered, t.errors)
                             for digest, t in totals.items()), key=lambda a: (a.app, a.digest)))


def sum_answers(rows: Iterable[Sequence[Sequence[Any]]]) -> tuple[DigestAnswers, ...]:
    """Edge workers' per-digest rows (``[app, digest, answered, errors]`` each, one list per
    worker) summed into one count per (app, digest), sorted."""
    totals: dict[tuple[str, str], list[int]] = {}
    for worker_rows in rows:
        for app, digest, answered, errors in worker_rows:
            total = totals.setdefault((str(app), str(digest)), [0, 0])
            total[0] += int(answered)
            total[1] += int(errors)
    return tuple(DigestAnswers(app, digest, n, bad)
                 for (app, digest), (n, bad) in sorted(totals.items()))
