"""The node agent's messages to itself, from its stop tasks, its timers and its own turns.

Off the wire on purpose: only this process knows when one of its children is gone, and no
message from outside may pose as one of them. Only :mod:`.agent` uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mycelium.wire import local

__all__ = ["SETTLE_GAP", "AnswerDue", "AppGone", "ChildGone", "Settle", "Wake"]

SETTLE_GAP = 0.05
"""Seconds between two :class:`Settle` reconciles of one app while its reports keep coming
(a report after a quiet spell is reconciled at once)."""


@local
@dataclass(frozen=True, slots=True)
class ChildGone:
    """A stop finished; ``gone`` False: the child may still be there (stop it again)."""

    app: str
    child: str
    gone: bool = True


@local
@dataclass(frozen=True, slots=True)
class Wake:
    """A rollout's timer (:class:`~.rollout.WakeAt`) for one app fired: reconcile it again."""

    app: str


@local
@dataclass(frozen=True, slots=True)
class AppGone:
    """An app's supervisor and all its instances are gone from this node."""

    app: str


@local
@dataclass(frozen=True, slots=True)
class Settle:
    """Instances of the app changed state: reconcile it once the reports queued until now are
    in. A mass start of 334 instances on a node made 334 reports in a burst, each of which
    reconciled every instance of the app (a quadratic start); now a burst reconciles once, and
    a long one at most every :data:`SETTLE_GAP`."""

    app: str


@local
@dataclass(frozen=True, slots=True)
class AnswerDue:
    """The wait for the instances' reports after a fabric restart is over: answer the fabric
    with what the agent knows (:class:`~.resync.SyncAnswer`)."""
