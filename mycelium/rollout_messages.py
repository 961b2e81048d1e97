"""The messages of deployment history and canaries: ``promote``, ``rollback``, ``history``
and the edge's per-digest answer counts.

Ordinary messages (frozen, slotted, on the wire), kept beside :mod:`mycelium.messages` only for
its size; they register with the wire codec here, and :mod:`mycelium.messages` imports this
module, so anything that decodes messages knows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mycelium.wire import register

__all__ = ["DigestAnswers", "EdgeAnswers", "GetHistory", "Promote", "Rollback"]


@dataclass(frozen=True, slots=True)
class Promote:
    """Continue an app's canary as the blue/green rollout of the same generation."""

    app: str


@dataclass(frozen=True, slots=True)
class Rollback:
    """Deploy an earlier deployment again (``to``: generation, digest, or "" the last one)."""

    app: str
    to: str = ""
    who: str = ""


@dataclass(frozen=True, slots=True)
class GetHistory:
    """Ask the fabric for an app's deployments, oldest first."""

    app: str


@dataclass(frozen=True, slots=True)
class DigestAnswers:
    """What one digest of one app answered through an edge over the last window."""

    app: str
    digest: str
    answered: int
    errors: int  # 5xx


@dataclass(frozen=True, slots=True)
class EdgeAnswers:
    """The edge's per-digest answers over its window, every second: what judges a canary."""

    counts: tuple[DigestAnswers, ...] = ()


register(DigestAnswers, EdgeAnswers, GetHistory, Promote, Rollback)
