"""The fabric's routing table on its way to the edge: sent when it changed, bursts coalesced.

Every instance report that can move a route (Ready, gone, serving or not) made the fabric
compute the whole table (every instance of every app) and the edge rebuild all of it: a mass
start of 1,000 instances made that a million endpoints built on each side, and most of the
mesh's CPU for the 15 to 20 s of the start. Reports now only mark the table stale and put one
:class:`PushRoutes` in the fabric's own mailbox; the table is computed once that message's
turn comes, after every report queued before it. An idle fabric pushes one mailbox hop later
(microseconds); a busy one pushes once per burst instead of once per report, and while the
reports keep coming, at most every :data:`GAP` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mycelium.messages import EndpointsChanged, InstanceInfo
from mycelium.states import InstanceState
from mycelium.wire import local
from supervisors.timers import shared_timers

from .names import Names

__all__ = ["GAP", "PushRoutes", "RoutePush", "moves_routes"]

GAP = 0.05
"""Seconds between two computations of the table while reports keep coming: a mass start
makes one Ready report every few milliseconds, each of which would otherwise compute the
whole table once more. A report after a quiet spell is pushed at once."""


def _routed(info: InstanceInfo | None) -> bool:
    return (info is not None and info.state == InstanceState.READY and info.serving
            and bool(info.url))


def moves_routes(old: InstanceInfo | None, new: InstanceInfo) -> bool:
    """Whether a report (``old`` the instance as known before, None if new) can change what
    the edge is sent: a routed endpoint (Ready and serving, with its URL), or the app's
    restart total (a stopped instance's restarts leave it). A Launching or Draining report of
    an instance that never served changes neither: no table is computed for it."""
    before = 0 if old is None else old.restarts
    after = 0 if new.state == InstanceState.STOPPED else new.restarts
    return _routed(old) or _routed(new) or before != after


@local
@dataclass(frozen=True, slots=True)
class PushRoutes:
    """The fabric to itself: send the routes now (off the wire: only it knows they are stale)."""


class RoutePush:
    """Computes the routing table and tells the edge, only when it differs from the last sent.

    Args:
        names: The mesh's registered names (``edge``).
        compute: The current table (the fabric's ``_endpoints``).
        tell_self: Puts a message into the fabric's mailbox.
        paused: True while routes must not be pushed (a restarted fabric re-syncing).
    """

    def __init__(self, names: Names, compute: Callable[[], EndpointsChanged],
                 tell_self: Callable[[Any], None], paused: Callable[[], bool]) -> None:
        self._names = names
        self._compute = compute
        self._tell_self = tell_self
        self._paused = paused
        self._sent: EndpointsChanged | None = None
        self._due = False
        self._at = -GAP  # when the table was last computed (monotonic)

    def now(self) -> None:
        """Send the table if it changed (in the fabric's turn)."""
        if self._paused():
            return
        self._at = time.monotonic()
        message = self._compute()
        if message != self._sent:
            self._sent = message
            self._names.tell("edge", message)

    def soon(self) -> None:
        """The table may have changed: send it once the reports queued until now are in (and
        no sooner than :data:`GAP` after the last computation)."""
        if not self._due:
            self._due = True
            wait = self._at + GAP - time.monotonic()
            if wait > 0:
                shared_timers().call_later(wait, lambda: self._tell_self(PushRoutes()))
            else:
                self._tell_self(PushRoutes())

    def due(self) -> None:
        """:class:`PushRoutes`' turn came (nothing to do if a flush was first)."""
        if self._due:
            self._due = False
            self.now()

    def flush(self) -> None:
        """Send a stale table now: before the fabric answers anyone, so that whatever it says
        is Ready is also on its way to the edge (``deploy`` returns, then a request goes)."""
        self.due()

    def resend(self) -> None:
        """Send the table whatever was sent before (a restarted edge asked for it)."""
        self._sent = self._compute()
        self._names.tell("edge", self._sent)
