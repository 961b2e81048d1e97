"""Helpers shared by the process-layer tests (a unique module name: test dirs are not packages)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import psutil

from mycelium.node.process import Workload

PY = sys.executable


class Spawner(Protocol):
    """The ``spawned`` fixture: start a workload that the test's teardown will stop."""

    def __call__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> Workload: ...


def is_our_zombie(pid: int) -> bool:
    """True if ``pid`` is a child of this test process that exited and was never reaped."""
    try:
        proc = psutil.Process(pid)
        return proc.ppid() == os.getpid() and proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll a condition with a deadline (for facts no event exists for, e.g. a file's content)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (OSError, ValueError, psutil.Error):
            pass
        time.sleep(0.01)
    return False


def gone(proc: psutil.Process) -> bool:
    """Dead: vanished, or a zombie nobody reaps (PID 1 in a container may never reap orphans)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
