"""The home lock: at most one mesh runs on a home, and ``down`` can tell whether one does.

The lock is an ``flock`` on ``<home>/mesh.lock`` held for the mesh's lifetime; the file holds the
owner's pid so that the refusal names it. The kernel drops the lock when the process dies, so a
crashed mesh never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from typing import IO

from mycelium.errors import OperationFailed
from mycelium.home import Home

__all__ = ["HomeLock", "MeshLocked"]


class MeshLocked(OperationFailed):
    """Another mesh already runs on this home."""


class HomeLock:
    """The exclusive lock of one home.

    Args:
        home: The home to lock.
    """

    def __init__(self, home: Home) -> None:
        self.home = home
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock without waiting and write our pid into the lock file.

        Raises:
            MeshLocked: another process holds it (the message names its pid and how to stop it).
        """
        f = open(self.home.lock_file, "a+")  # noqa: SIM115 - held for the mesh's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise MeshLocked(f"a mesh is already running at {self.home.root} (pid {pid}); "
                             f"stop it with `mycelium down --home {self.home.root}`") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        f, self._file = self._file, None
        if f is not None:
            f.close()
