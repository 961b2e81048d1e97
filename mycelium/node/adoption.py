"""Small helpers of the agent: adopting running instances, telling actors that may be gone."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pykka

from mycelium.messages import Resync
from mycelium.states import InstanceState
from supervisors import which_children

from .rollout import ChildView

__all__ = ["adopt_children", "tell_quietly", "teller"]


def adopt_children(children: dict[str, ChildView], units: dict[str, int],
                   app_sup: pykka.ActorRef[Any]) -> None:
    """View an app supervisor's instances as Launching and ask each to report again.

    A restarted agent learns which of the node's instances of the app each child is (its
    unit) from the child's meta.
    """
    now = time.time()
    for kid in which_children(app_sup):
        children[kid.id] = ChildView(kid.id, str(kid.meta.get("digest", "")),
                                     InstanceState.LAUNCHING, now,
                                     secrets=int(kid.meta.get("secrets", 0)))
        units[kid.id] = int(kid.meta.get("unit", 0))
        if kid.ref is not None:
            kid.ref.tell(Resync())


def teller(ref: Any, message: Any) -> Callable[[], None]:
    """A callable that tells ``ref`` the message (for timers)."""
    return lambda: tell_quietly(ref, message)


def tell_quietly(ref: Any, message: Any) -> None:
    """Tell ``ref`` the message unless it is dead."""
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)
