"""One timer thread for the whole process: backoff restarts, health checks, rollout deadlines.

A backoff wait must never block a supervisor's mailbox, and hundreds of instances each needing
a periodic nudge would otherwise mean hundreds of ``threading.Timer`` threads; so one daemon
thread keeps a heap of due times and runs each callback when due. A callback runs on that
thread and must be quick and must not block (it ``tell``s an actor a message); one that raises
is logged and the thread goes on (:func:`supervisors.callbacks.call_logged`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable

from supervisors.callbacks import call_logged
from supervisors.singleton import Singleton

__all__ = ["TimerHandle", "Timers", "call_later", "shared_timers"]

log = logging.getLogger(__name__)

Callback = Callable[[], object]

MAX_WAIT = 3600.0
"""The longest single wait of the thread: a wait beyond ``threading.TIMEOUT_MAX`` (~292 years;
a "never" of ``1e10`` seconds) raises OverflowError, which would end the thread, and with it
every later timer of the process (a backoff restart, a health check, an output prune). A timer
due later than this is simply waited for in several steps."""


def _nothing() -> None:
    return None


class TimerHandle:
    """A scheduled callback; :meth:`cancel` makes it a no-op if it has not run yet."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callback) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback (harmless if it already ran); its closure is let go now."""
        self.cancelled = True
        self.callback = _nothing


class Timers:
    """A heap of (due time, callback) served by one daemon thread, started on first use."""

    def __init__(self, name: str = "timers") -> None:
        self._name = name
        self._what = f"{name}: a timer callback"
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_later(self, delay: float, callback: Callback, slack: float = 0.0) -> TimerHandle:
        """Run ``callback()`` on the timer thread in ``delay`` seconds (<= 0: at once).

        ``slack`` lets it run up to that much later, on the next multiple of ``slack``: the
        periodic work of hundreds of instances then fires in batches, and the thread (and the
        pool it feeds) wakes a few times a second instead of hundreds.

        Returns:
            A handle to cancel it.
        """
        handle = TimerHandle(callback)
        due = time.monotonic() + max(0.0, delay)
        if slack > 0 and math.isfinite(due):
            due = math.ceil(due / slack) * slack
        entry = (due, next(self._seq), handle)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                # first use, or (never expected) the thread died: a timer must still fire
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:  # due before everything else: wake the thread sooner
                self._cond.notify()
        return handle

    def cancel(self, handle: TimerHandle) -> None:
        """The same as ``handle.cancel()``."""
        handle.cancel()

    @property
    def pending(self) -> int:
        """How many timers wait (cancelled ones included until their due time)."""
        return len(self._heap)

    def close(self) -> None:
        """Stop the thread; pending callbacks never run (the shared timers are never closed)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(5)

    @property
    def running(self) -> bool:
        """True while the timer thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(min(self._heap[0][0] - time.monotonic(), MAX_WAIT)
                                    if self._heap else None)
                if self._closed:
                    return
                _, _, handle = heapq.heappop(self._heap)
            if not handle.cancelled:
                call_logged(log, self._what, handle.callback)


shared_timers: Singleton[Timers] = Singleton(Timers)
"""The process-wide timers (``shared_timers()``): one thread for every supervisor and node."""


def call_later(delay: float, callback: Callback, slack: float = 0.0) -> TimerHandle:
    """``shared_timers().call_later(...)``: run ``callback()`` on the shared timer thread."""
    return shared_timers().call_later(delay, callback, slack)
