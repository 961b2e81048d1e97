"""The sweep after a crash, off the respawn path: stray processes, directories, the uid.

When a workload crashes its supervisor starts the replacement only once the failed actor's
``on_failure`` returned. Sweeping the instance's jail (:func:`~.containment.stop_jail`) reads
``/proc/*/status`` of every process on the machine: ~50 ms of the mesh's CPU (and GIL) on a
loaded two-core machine, which made every respawn that much later. The replacement needs none
of it: it gets a uid and directories of its own. So the crashed instance's process group is
stopped at once (no process of it may outlive the actor), and what may have left the group is
swept here, on one thread of its own, after which the instance's uid is given back (so a uid
is never reused while a stray of it may live). :func:`wait_swept` lets the mesh's shutdown
finish every pending sweep before it reports that nothing is left running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mycelium._logger import get_logger
from supervisors.callbacks import call_logged
from supervisors.pool import WorkerPool
from supervisors.singleton import Singleton

__all__ = ["sweep_later", "wait_swept"]

log = get_logger(__name__)

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


def sweep_later(sweep: Callable[[], None]) -> None:
    """Run ``sweep()`` on the sweeper's thread (in order; a failure is logged)."""
    _PENDING.add(1)

    def run() -> None:
        try:
            call_logged(log, "sweeping a crashed instance", sweep)
        finally:
            _PENDING.add(-1)

    _POOL().submit(run)


def wait_swept(timeout: float = 30.0) -> bool:
    """Block until every sweep handed to :func:`sweep_later` ran; False on timeout."""
    return _PENDING.wait(timeout)
