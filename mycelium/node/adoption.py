"""Small helpers of the agent: adopting running instances, telling actors that may be gone."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pykka

from mycelium.messages import Resync
from mycelium.states import InstanceState
from supervisors import SupervisorNotRunning, which_children

from .rollout import ChildView

__all__ = ["adopt_children", "resync_all", "tell_quietly", "teller"]


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


def resync_all(apps_sup: pykka.ActorRef[Any]) -> None:
    """Ask every instance under a node's ``apps`` supervisor to report again.

    An instance reports to the fabric and to its agent at once, so a restarted fabric hears
    each instance from the instance itself, whatever the agent had heard by then (an app
    supervisor that is restarting is skipped: its instances report when they start).
    """
    for app_sup in _refs(apps_sup):
        for kid in _refs(app_sup):
            tell_quietly(kid, Resync())


def _refs(sup: pykka.ActorRef[Any]) -> list[pykka.ActorRef[Any]]:
    """The running children of ``sup`` (none if it is not running)."""
    try:
        return [c.ref for c in which_children(sup) if c.ref is not None]
    except SupervisorNotRunning:
        return []


def teller(ref: Any, message: Any) -> Callable[[], None]:
    """A callable that tells ``ref`` the message (for timers)."""
    return lambda: tell_quietly(ref, message)


def tell_quietly(ref: Any, message: Any) -> None:
    """Tell ``ref`` the message unless it is dead."""
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)
