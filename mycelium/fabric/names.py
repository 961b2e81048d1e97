"""Registered names, like Erlang's ``register/2``: stable names for actors whose refs change.

Pykka has no restart: a restarted actor is a new actor with a new ref. Actors therefore find
each other by name (``fabric``, ``edge``, ``control``, ``node-1``, ``node-1/apps``) at the
moment they send, never by a ref kept from an earlier life.
"""

from __future__ import annotations

import threading
from typing import Any

import pykka

__all__ = ["Names"]


class Names:
    """A thread-safe name → actor ref table for one mesh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, pykka.ActorRef[Any]] = {}

    def register(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        """Bind ``name`` to ``ref`` (a restarted actor replaces its predecessor)."""
        with self._lock:
            self._refs[name] = ref

    def unregister(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        """Unbind ``name`` if it is still bound to ``ref`` (a successor keeps its binding)."""
        with self._lock:
            if self._refs.get(name) is ref:
                del self._refs[name]

    def get(self, name: str) -> pykka.ActorRef[Any] | None:
        """The live ref bound to ``name``, or None."""
        with self._lock:
            ref = self._refs.get(name)
        if ref is None or not ref.is_alive():
            return None
        return ref

    def names(self) -> list[str]:
        """Every bound name."""
        with self._lock:
            return sorted(self._refs)

    def tell(self, name: str, message: Any) -> bool:
        """Tell ``name`` a message if it is alive; False when nobody could take it."""
        ref = self.get(name)
        if ref is None:
            return False
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            return False
        return True
