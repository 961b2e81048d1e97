"""One instance per process, built on first use and forgotten across ``fork``.

The process-wide services (the actor pool, the timer thread, the node's reaper and prober)
each serve the whole process from their own daemon threads. Threads do not survive ``fork``,
so a forked child forgets every such instance and builds its own on first use there (a pool
whose idle workers died with the parent's threads would otherwise never run a turn again).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Singleton"]

T = TypeVar("T")


class Singleton(Generic[T]):
    """``singleton()`` returns the one instance ``make()`` built, building it on the first call.

    The check after the first call takes no lock (these are called on hot paths: every pooled
    actor asks for the pool when it starts).
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()
        _REGISTRY.append(self)  # type: ignore[arg-type]  # only forget() is called on them

    def __call__(self) -> T:
        value = self._value
        if value is not None:
            return value
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value

    def forget(self) -> None:
        """Drop the instance (the next call builds a new one); run in a forked child."""
        self._value = None
        self._lock = threading.Lock()  # it may have been held by a thread of the parent


_REGISTRY: list[Singleton[object]] = []


def _forget_all_in_child() -> None:
    for singleton in _REGISTRY:
        singleton.forget()


os.register_at_fork(after_in_child=_forget_all_in_child)
