"""Bounded parallelism for blue/green (Flow D): which nodes may switch an app right now.

A node *switches* an app from the moment it starts a green beside its blue until every blue has
left the routes (it is draining: :func:`mycelium.node.rollout.switched`). The fabric's mailbox
serialises :class:`ClaimSwitch`, so at most ``parallel`` nodes switch one app at a time and the
others keep serving their blue untouched. A rollback (plan ``failed``) needs no switch:
reverting must never wait. A holder that never releases (its agent died with its view) loses
the switch after ``lease`` seconds. A member of a multi-machine mesh keeps the holders in etcd
instead (:class:`~mycelium.fabric.etcd_switch.EtcdSwitches`), so the bound holds across members;
both apply the same :func:`grant`. A node refused a switch asks again shortly; :class:`SwitchBook`
has the fabric tell it at once when a holder releases one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from mycelium.messages import (  # kept importable from here
    ClaimSwitch,
    IsRouted,
    ReleaseSwitch,
    SwitchFreed,
)

__all__ = [
    "ClaimSwitch",
    "IsRouted",
    "ReleaseSwitch",
    "SwitchBook",
    "SwitchFreed",
    "SwitchGate",
    "Switches",
    "grant",
]


def grant(holders: dict[str, float], node: str, parallel: int, now: float,
          lease: float) -> bool:
    """Grant ``node`` the switch if it holds it or fewer than ``parallel`` nodes do (pure,
    on ``holders``: node → lease expiry, expired holders dropped, the grant renews)."""
    for other in [n for n, until in holders.items() if until <= now]:
        del holders[other]
    if node in holders or len(holders) < max(1, parallel):
        holders[node] = now + lease
        return True
    return False


class Switches(Protocol):
    """Who switches which app (one fabric's memory, or etcd for the whole mesh)."""

    def claim(self, app: str, node: str, parallel: int, now: float, lease: float) -> bool:
        """Grant or refuse ``node`` the switch of ``app``."""
        ...

    def release(self, app: str, node: str) -> None:
        """Forget ``node``'s switch of ``app``."""
        ...

    def forget(self, app: str) -> None:
        """The app was stopped."""
        ...


class SwitchGate:
    """Switch holders by app, with their lease expiry (pure: the fabric passes ``now``)."""

    def __init__(self) -> None:
        self._holders: dict[str, dict[str, float]] = {}

    def claim(self, app: str, node: str, parallel: int, now: float, lease: float) -> bool:
        """Grant if ``node`` holds the switch already or fewer than ``parallel`` nodes do."""
        return grant(self._holders.setdefault(app, {}), node, parallel, now, lease)

    def release(self, app: str, node: str) -> None:
        """Forget ``node``'s switch of ``app`` (no-op if it held none)."""
        self._holders.get(app, {}).pop(node, None)

    def forget(self, app: str) -> None:
        """The app was stopped: nobody switches it any more."""
        self._holders.pop(app, None)

    def holders(self, app: str) -> list[str]:
        """The nodes switching ``app`` (sorted)."""
        return sorted(self._holders.get(app, {}))


class SwitchBook:
    """The fabric's side of the switches: grants at most ``parallel``, and tells each node it
    refused (:class:`SwitchFreed`) as soon as a holder releases one.

    A refused node asks again after its retry delay anyway (0.1 s); being told saves a rollout
    at ``parallel = 1`` up to that delay at each node after the first.

    Args:
        switches: Who holds what (:class:`SwitchGate`, or etcd for a member).
        parallel: ``[rollout] parallel``.
        tell: Sends a message to a node (the fabric's ``names.tell``).
    """

    def __init__(self, switches: Switches, parallel: int,
                 tell: Callable[[str, Any], object]) -> None:
        self._switches, self._parallel, self._tell = switches, parallel, tell
        self._waiting: dict[str, set[str]] = {}

    def claim(self, app: str, node: str, lease: float) -> bool:
        """Grant or refuse ``node`` the switch of ``app`` (a refused node waits)."""
        granted = self._switches.claim(app, node, self._parallel, time.time(), lease)
        if granted:
            self._waiting.get(app, set()).discard(node)
        else:
            self._waiting.setdefault(app, set()).add(node)
        return granted

    def release(self, app: str, node: str) -> None:
        """``node`` released its switch of ``app``: tell the nodes waiting for one."""
        self._switches.release(app, node)
        for waiting in sorted(self._waiting.pop(app, ())):
            self._tell(waiting, SwitchFreed(app))

    def forget(self, app: str) -> None:
        """The app was stopped."""
        self._switches.forget(app)
        self._waiting.pop(app, None)
