"""One shared timer thread for every supervisor's delayed restarts.

A backoff wait must never block a supervisor's mailbox, and a thread per waiting child would
not scale to a thousand crash-looping children; so one daemon thread keeps a heap of due
times and runs each (tiny, non-blocking) callback — a ``tell`` to the supervisor — when due.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["TimerHandle", "call_later"]

logger = logging.getLogger("supervisors")


class TimerHandle:
    """A scheduled callback; :meth:`cancel` makes it a no-op if it has not run yet."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback (harmless if it already ran)."""
        self.cancelled = True


class _Scheduler:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(callback)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), handle))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="supervisors-timer", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                due, _, handle = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            try:
                handle.callback()
            except Exception:
                logger.exception("supervisors timer callback failed")


_scheduler = _Scheduler()


def call_later(delay: float, callback: Callable[[], None]) -> TimerHandle:
    """Run ``callback()`` on the shared timer thread after ``delay`` seconds.

    Args:
        delay: Seconds from now (<= 0 runs as soon as possible).
        callback: Must not block; typically ``ref.tell(message)``.

    Returns:
        A handle to cancel it.
    """
    return _scheduler.call_later(delay, callback)
