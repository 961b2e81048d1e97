"""The messages a supervisor handles, and the records it answers with.

Frozen, slotted dataclasses: the supervisor dispatches on them with ``match``; none carries a
mutable object that another actor keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pykka

from supervisors.actor import Exit
from supervisors.spec import ChildSpec

__all__ = [
    "ChildExited",
    "ChildInfo",
    "CountChildren",
    "DeleteChild",
    "Describe",
    "GetChildSpec",
    "RestartChild",
    "RestartDue",
    "RetryRestart",
    "StartChild",
    "TerminateChild",
    "WhichChildren",
]


@dataclass(frozen=True, slots=True)
class ChildExited:
    """Told by a dying child's thread after its cleanup finished (the actor's urn identifies
    which incarnation died, so an exit the supervisor caused itself is recognised as stale)."""

    child_id: str
    urn: str
    exit: Exit


@dataclass(frozen=True, slots=True)
class RestartDue:
    """Told by the timer thread when a backoff wait is over."""

    child_ids: tuple[str, ...]
    seq: int


@dataclass(frozen=True, slots=True)
class RetryRestart:
    """Told by the supervisor to itself when a restart failed to start (OTP try_again)."""

    child_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class StartChild:
    """Ask: add a child and start it."""

    spec: ChildSpec


@dataclass(frozen=True, slots=True)
class TerminateChild:
    """Ask: stop a child, keep its spec (a DynamicSupervisor forgets it)."""

    child_id: str


@dataclass(frozen=True, slots=True)
class RestartChild:
    """Ask: start a stopped child again from its spec."""

    child_id: str


@dataclass(frozen=True, slots=True)
class DeleteChild:
    """Ask: forget a stopped child's spec."""

    child_id: str


@dataclass(frozen=True, slots=True)
class GetChildSpec:
    """Ask: a child's spec."""

    child_id: str


@dataclass(frozen=True, slots=True)
class WhichChildren:
    """Ask: the children as ChildInfo records, in start order."""


@dataclass(frozen=True, slots=True)
class CountChildren:
    """Ask: OTP's count_children counters."""


@dataclass(frozen=True, slots=True)
class Describe:
    """Ask: this supervisor's own description, children one level deep."""


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One child as ``which_children`` shows it.

    Attributes:
        id: The child id.
        ref: The running actor's ref, ``None`` unless ``status`` is ``running``.
        type: ``worker`` or ``supervisor``.
        status: ``running``, ``restarting`` (waiting for a backoff restart) or ``undefined``
            (stopped, its spec kept).
        restarts: How many times the supervisor restarted it.
        started_at: Epoch seconds of the current incarnation's start, or ``None``.
        meta: The child spec's meta.
    """

    id: str
    ref: pykka.ActorRef[Any] | None
    type: str
    status: str
    restarts: int
    started_at: float | None
    meta: Mapping[str, Any] = field(default_factory=dict)
