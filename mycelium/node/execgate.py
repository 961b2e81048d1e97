"""Writing a binary and forking never overlap: no workload's exec meets "Text file busy".

Used by :class:`~mycelium.node.instance.AppInstance`'s launch task around the spore's
extraction and by :func:`~mycelium.node.launch.spawn_retrying` around the spawn.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["EXEC_GATE", "ExecGate"]


class ExecGate:
    """Writing binaries and forking never overlap (each may overlap with its own kind).

    A binary being extracted is open for writing in this process; a fork at that moment gives
    the child a copy of that descriptor until the child execs. An exec of the binary meanwhile
    fails with ETXTBSY ("Text file busy"). When the mesh spawns the workload itself, that
    failure is a ``ProcessError`` and is retried; through the isolation wrapper (``setpriv``)
    it is the wrapper that fails to exec, and the instance just exits with code 126: in a mass
    start of 1,000 instances on the 8 launch threads, 8 % of them did, each a crash and a
    backoff restart. So extractions (``writing``) and spawns (``spawning``: the Popen call,
    which returns once the child exec'd, its copies of our descriptors closed) exclude each
    other; a side that waits gets the next turn, so neither starves the other.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = [0, 0]
        self._waiting = [0, 0]
        self._turn: int | None = None

    @contextlib.contextmanager
    def _side(self, mine: int) -> Iterator[None]:
        other = 1 - mine
        with self._cond:
            self._waiting[mine] += 1
            while self._active[other] or (self._waiting[other] and self._turn == other):
                if self._active[other]:
                    self._turn = mine  # the other side's newcomers wait until we ran
                self._cond.wait()
            self._waiting[mine] -= 1
            self._active[mine] += 1
        try:
            yield
        finally:
            with self._cond:
                self._active[mine] -= 1
                if not self._active[mine]:
                    self._turn = other if self._waiting[other] else None
                    self._cond.notify_all()

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """Around writing an executable (the spore's extraction)."""
        return self._side(0)

    def spawning(self) -> contextlib.AbstractContextManager[None]:
        """Around a fork and exec."""
        return self._side(1)


EXEC_GATE = ExecGate()
"""The process's one gate: every node's extractions and spawns go through it."""
