"""The sweep after a crash, off the respawn path: stray processes, directories, the uid.

When a workload crashes its supervisor starts the replacement only once the failed actor's
``on_failure`` returned. Sweeping the instance's jail (:func:`~.containment.stop_jail`) reads
``/proc/*/status`` of every process on the machine: ~50 ms of the mesh's CPU (and GIL) on a
loaded two-core machine, which made every respawn that much later. The replacement needs none
of it: it gets a uid and directories of its own. So the crashed instance's process group is
stopped at once (no process of it may outlive the actor), and what may have left the group is
swept here, on one thread of its own, after which the instance's uid is given back (so a uid
is never reused while a stray of it may live). A sweep waits :data:`DELAY` first: its scan
would otherwise compete for the cores (and the GIL) with the replacement's own start.
:func:`wait_swept` lets the mesh's shutdown run every pending sweep at once and finish them
before it reports that nothing is left running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mycelium._logger import get_logger
from supervisors.callbacks import call_logged
from supervisors.pool import WorkerPool
from supervisors.singleton import Singleton
from supervisors.timers import TimerHandle, call_later

__all__ = ["sweep_later", "wait_swept"]

log = get_logger(__name__)

DELAY = 1.0
"""Seconds a sweep waits, so that the replacement's start does not share the cores with it."""

_POOL = Singleton(lambda: WorkerPool(max_workers=1, keep_idle=0, name="mycelium-sweep"))


class _Pending:
    """How many sweeps are queued or running; :meth:`wait` blocks until there are none."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def add(self, n: int) -> None:
        with self._cond:
            self.count += n
            if self.count == 0:
                self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count == 0, timeout)


_PENDING = _Pending()


_DELAYED: dict[int, tuple[TimerHandle, Callable[[], None]]] = {}
_DELAYED_LOCK = threading.Lock()


def sweep_later(sweep: Callable[[], None], delay: float = DELAY) -> None:
    """Run ``sweep()`` on the sweeper's thread after ``delay`` s (a failure is logged)."""
    _PENDING.add(1)

    def run() -> None:
        try:
            call_logged(log, "sweeping a crashed instance", sweep)
        finally:
            _PENDING.add(-1)

    def due() -> None:
        with _DELAYED_LOCK:
            if _DELAYED.pop(id(run), None) is None:
                return  # wait_swept() already submitted it
        _POOL().submit(run)

    if delay <= 0:
        _POOL().submit(run)
        return
    with _DELAYED_LOCK:
        _DELAYED[id(run)] = (call_later(delay, due), run)


def wait_swept(timeout: float = 30.0) -> bool:
    """Run every delayed sweep now and block until all ran; False on timeout."""
    with _DELAYED_LOCK:
        delayed = list(_DELAYED.values())
        _DELAYED.clear()
    for handle, run in delayed:
        handle.cancel()
        _POOL().submit(run)
    return _PENDING.wait(timeout)
