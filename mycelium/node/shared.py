"""Process-wide service threads, each started on first use: the reaper, the ticker, the prober.

Each serves the whole process from one daemon thread. Threads do not survive ``fork``, so a
forked child forgets them all and starts its own on first use there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Shared"]

T = TypeVar("T")

_ALL: list[Shared[object]] = []


class Shared(Generic[T]):
    """``shared()`` returns the one instance ``make()`` built, building it on the first call."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()
        _ALL.append(self)  # type: ignore[arg-type]  # only _forget is called on them

    def __call__(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value

    def _forget(self) -> None:
        self._value = None
        self._lock = threading.Lock()  # it may have been held by a thread of the parent


def _forget_all_in_child() -> None:
    for shared in _ALL:
        shared._forget()


os.register_at_fork(after_in_child=_forget_all_in_child)
