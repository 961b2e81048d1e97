"""One thread that notices every workload's exit the moment it happens: epoll over pidfds.

Each workload's pidfd (Linux >= 5.3) is registered with epoll; a readable pidfd means the
child exited, so the reap never blocks and no polling period delays it (one thread and one fd
per workload instead of one thread each; kernels without pidfds get a waiting thread each).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
from collections.abc import Callable

from mycelium._logger import get_logger
from supervisors.callbacks import call_logged
from supervisors.singleton import Singleton

from .selectloop import SelectLoop

__all__ = ["Reaper", "shared_reaper", "wait_then_call"]

log = get_logger(__name__)

OnExit = Callable[[], None]


class Reaper:
    """The reaper's thread; :meth:`watch` may be called from any thread."""

    def __init__(self) -> None:
        self._loop: SelectLoop[tuple[int, OnExit]] = SelectLoop(
            "mycelium-reaper", log, on_event=self._exited, on_handed=self._register)

    def watch(self, pid: int, on_exit: OnExit) -> None:
        """Call ``on_exit()`` from the reaper thread once child ``pid`` exited (not yet reaped:
        ``on_exit`` reaps it)."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # no pidfd support: a thread that waits without reaping
            threading.Thread(target=wait_then_call, args=(pid, on_exit),
                             name=f"mycelium-wait-{pid}", daemon=True).start()
            return
        self._loop.hand((pidfd, on_exit))

    def close(self) -> None:
        """Stop the thread; watched exits are no longer noticed (the shared one never closes)."""
        self._loop.close()

    @property
    def running(self) -> bool:
        """True while the reaper's thread runs."""
        return self._loop.running

    def _register(self, handed: list[tuple[int, OnExit]]) -> None:
        for pidfd, on_exit in handed:
            self._loop.selector.register(pidfd, selectors.EVENT_READ, on_exit)

    def _exited(self, key: selectors.SelectorKey, _events: int) -> None:
        self._loop.selector.unregister(key.fd)
        os.close(key.fd)
        call_logged(log, "reaping a workload", key.data)


def wait_then_call(pid: int, on_exit: OnExit) -> None:
    """Fallback watcher: block until ``pid`` exited, leaving the zombie for ``on_exit`` to reap."""
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    call_logged(log, "reaping a workload", on_exit)


shared_reaper: Singleton[Reaper] = Singleton(Reaper)
"""The process-wide reaper (``shared_reaper()``), started on first use."""
