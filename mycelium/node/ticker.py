"""One timer thread for the whole mesh: health checks, samples and rollout deadlines.

Hundreds of instances each needing a periodic nudge would otherwise mean hundreds of
``threading.Timer`` threads. A callback runs in the ticker's thread and must be quick (it only
``tell``s an actor a message).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable

from .shared import Shared

__all__ = ["Ticker", "shared_ticker"]


class Ticker:
    """A heap of (due time, callback) served by one daemon thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._cancelled: set[int] = set()
        self._pending: set[int] = set()
        self._closed = False
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name="mycelium-ticker", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, callback: Callable[[], object], slack: float = 0.0) -> int:
        """Run ``callback`` in ``delay`` seconds; returns a handle for :meth:`cancel`.

        ``slack`` lets the callback run up to that much later, on the next multiple of
        ``slack``: periodic work of hundreds of instances then fires in batches, and the
        thread (and the pool it feeds) wakes a few times a second instead of hundreds.
        """
        handle = next(self._ids)
        due = time.monotonic() + max(0.0, delay)
        if slack > 0:
            due = math.ceil(due / slack) * slack
        entry = (due, handle, callback)
        with self._cond:
            heapq.heappush(self._heap, entry)
            self._pending.add(handle)
            if self._heap[0] is entry:  # due before everything else: the thread must wake sooner
                self._cond.notify()
        return handle

    def cancel(self, handle: int) -> None:
        """Forget a pending callback (no-op if it ran already)."""
        with self._cond:
            if handle in self._pending:
                self._cancelled.add(handle)

    def close(self) -> None:
        """Stop the thread; pending callbacks never run (the shared ticker is never closed)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._closed:
                    return
                _, handle, callback = heapq.heappop(self._heap)
                self._pending.discard(handle)
                if handle in self._cancelled:
                    self._cancelled.discard(handle)
                    continue
            with contextlib.suppress(Exception):
                callback()


shared_ticker = Shared(Ticker)
"""The process-wide ticker (``shared_ticker()``), started on first use."""
