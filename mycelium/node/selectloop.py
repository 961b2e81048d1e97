"""The skeleton of the node's selector threads (the reaper, the prober): one thread, epoll.

Each serves the whole process from one daemon thread that waits in ``select``. Other threads
hand it work through :meth:`SelectLoop.hand` (a list under a lock, and a byte on a pipe that
wakes the thread), so the selector is only ever touched by its own thread. A failing step is
logged with its traceback and the loop goes on (:func:`supervisors.callbacks.call_logged`):
the thread must outlive any one odd socket, fd or callback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from supervisors.callbacks import call_logged

__all__ = ["SelectLoop"]

W = TypeVar("W")

OnEvent = Callable[[selectors.SelectorKey, int], None]


class SelectLoop(Generic[W]):
    """A selector served by one daemon thread; work items reach it through :meth:`hand`.

    Args:
        name: The thread's name (and what the log lines say).
        log: Where a failing step is logged.
        on_event: Called for each ready registered fd (never for the wake pipe).
        on_handed: Called with the items handed in since the last call.
        timeout: How long the next ``select`` may wait (None: until woken).
        after_select: Called after each ``select`` (e.g. to expire deadlines).
        on_close: Called once on the thread after :meth:`close` ended the loop.
    """

    def __init__(self, name: str, log: logging.Logger, on_event: OnEvent,
                 on_handed: Callable[[list[W]], None],
                 timeout: Callable[[], float | None] = lambda: None,
                 after_select: Callable[[], None] = lambda: None,
                 on_close: Callable[[], None] = lambda: None) -> None:
        self.selector = selectors.DefaultSelector()
        self._log, self._what = log, f"{name}: a step"
        self._on_event, self._on_handed = on_event, on_handed
        self._timeout, self._after_select, self._on_close = timeout, after_select, on_close
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._handed: list[W] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def hand(self, item: W) -> None:
        """Give the thread ``item`` (from any thread); ``on_handed`` gets it soon.

        Only the first item since the thread last took them writes the wake byte: the thread
        takes every item handed until then, so a burst of hands costs one wake-up.
        """
        with self._lock:
            self._handed.append(item)
            first = len(self._handed) == 1
        if first:
            self._wake()

    def close(self) -> None:
        """End the loop (``on_close`` runs on the thread) and wait for the thread."""
        self._closed = True
        self._wake()
        self._thread.join(5)

    @property
    def running(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes the thread anyway
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while not self._closed:
            call_logged(self._log, self._what, self._step)
        call_logged(self._log, self._what, self._on_close)

    def _step(self) -> None:
        for key, events in self.selector.select(self._timeout()):
            if key.data is None:
                self._take_handed()
            else:
                self._on_event(key, events)
        self._after_select()

    def _take_handed(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        with self._lock:
            handed, self._handed = self._handed, []
        if handed:
            self._on_handed(handed)
