"""A binary just written is exec'd only once no forked child can still hold it open for writing.

A spore's binary being extracted is open for writing in this process; a fork by another
launch thread at that moment gives the child a copy of that descriptor until the child execs
(the descriptor is close-on-exec). An exec of the binary meanwhile fails with ETXTBSY ("Text
file busy"). When the mesh spawns the workload itself that failure is a ``ProcessError`` and
is retried; through the isolation wrapper (``setpriv``) it is the wrapper that fails to exec
the binary, and the instance exits with code 126: in a start of 1,000 instances on the
8 launch threads, 8 % of them crashed so, each a backoff restart.

So every spawn (the Popen call, which returns once the child exec'd: its copies of our
descriptors are closed by then) is counted while it runs, and an extraction, once its file is
closed, waits until every spawn that began before that moment has returned. Spawns never wait
(a first version made extractions and spawns exclude each other: it serialised the launch
threads, and 300 instances were Ready 0.5 to 1.3 s after the last deploy instead of ~0.2 s); an
extraction waits at most one spawn's time, a few milliseconds. Only the instance's own binary
matters to its exec, and only its own extraction ever writes it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["EXEC_GATE", "ExecGate"]


class ExecGate:
    """Counts the spawns in flight; an extraction leaves once those begun before its end did."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._seq = 0  # spawns begun so far
        self._running: set[int] = set()  # the sequence numbers of the spawns in flight

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """Around a fork and exec (never waits)."""
        with self._cond:
            self._seq += 1
            mine = self._seq
            self._running.add(mine)
        try:
            yield
        finally:
            with self._cond:
                self._running.discard(mine)
                self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around writing an executable: on leaving, every child forked meanwhile has exec'd."""
        yield
        with self._cond:
            upto = self._seq
            self._cond.wait_for(lambda: not any(s <= upto for s in self._running))

    def in_flight(self) -> int:
        """How many spawns run now."""
        with self._cond:
            return len(self._running)


EXEC_GATE = ExecGate()
"""The process's one gate: every node's extractions and spawns go through it."""
