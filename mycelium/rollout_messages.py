"""The messages of deployment history and canaries (re-exported by :mod:`mycelium.messages`).

Kept in a module of their own only for size: they are ordinary messages, registered with the
wire codec with every other one, and imported from :mod:`mycelium.messages`.
"""

from __future__ import annotations

from dataclasses import dataclass

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
