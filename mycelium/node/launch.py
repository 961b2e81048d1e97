"""What an instance's launch task does around the spawn: retry a busy binary, pace probes.

Plain functions with no actor state, used by :class:`~mycelium.node.instance.AppInstance`'s
launch task (on the launch pool, never in an actor's turn).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mycelium.node.process import Confinement, ProcessError, Workload, spawn

__all__ = ["Launching", "spawn_retrying"]


class Launching:
    """How many instances are probing for their first 200 right now.

    Each failed probe costs the mesh ~0.1 ms of CPU. One instance polls every 10 ms; hundreds
    starting at once would burn cores the workloads need to start, so the period grows with
    their number to keep the whole mesh near ``MAX_PROBE_RATE`` probes per second.
    """

    MAX_PROBE_RATE = 3000.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def enter(self) -> None:
        with self._lock:
            self.count += 1

    def leave(self) -> None:
        with self._lock:
            self.count -= 1

    def interval(self, base: float) -> float:
        return max(base, self.count / self.MAX_PROBE_RATE)


def spawn_retrying(argv: list[str], directory: Path, env: dict[str, str],
                   output: tuple[Path, ...], confine: Confinement | None = None) -> Workload:
    """Spawn, retrying briefly on ETXTBSY.

    Another thread's fork may briefly hold a copy of the descriptor that wrote this binary (a
    sibling instance extracting while we fork), which makes exec fail with "Text file busy"
    until that child has exec'd; it clears within milliseconds.
    """
    for attempt in range(50):
        try:
            return spawn(argv, cwd=directory / "app", env=env, log_path=(output[0], output[1]),
                         confine=confine)
        except ProcessError as exc:
            if "busy" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.005)
    raise AssertionError("unreachable")
