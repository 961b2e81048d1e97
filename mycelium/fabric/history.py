"""An app's deployment history as pure functions over a list of records (oldest first).

Like ``kubectl rollout history`` and Nomad's job versions: every publish of a plan is one
:class:`Deployment`; what became of it is its ``end`` (empty while it is the current one). The
fabric applies these functions and writes the app's whole list back to its durable store
(:mod:`mycelium.fabric.history_store`), bounded by ``[rollout] history_keep``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from mycelium.errors import OperationFailed
from mycelium.messages import Plan

from .errors import BadPlan, FabricError

__all__ = ["DEFAULT_KEEP", "Deployment", "NothingToRollBack", "failed", "history_doc",
           "published", "rollback_target", "stopped"]

DEFAULT_KEEP = 50
"""``[rollout] history_keep``'s default: deployments kept per app."""

SUPERSEDED = "superseded"
SUCCEEDED = "succeeded"


class NothingToRollBack(FabricError, OperationFailed):
    """``rollback`` found no earlier deployment that ran successfully (exit 1)."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment of an app: its plan's generation and digest, when and by whom.

    ``end`` is empty while it is the current deployment (``running``), then ``succeeded`` (the
    app was stopped), ``superseded``, ``failed: <reason>`` or ``rolled back: <reason>``.
    """

    generation: int
    digest: str
    version: str = ""
    at: float = 0.0
    who: str = ""
    end: str = ""

    @property
    def outcome(self) -> str:
        """The documented outcome word (``running`` while current)."""
        return self.end or "running"

    def to_doc(self) -> dict[str, Any]:
        """One object of ``mycelium history --json``."""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at))
        return {"generation": self.generation, "digest": self.digest, "version": self.version,
                "at": at, "outcome": self.outcome, "who": self.who}

    def to_store(self) -> dict[str, Any]:
        """The record as the durable store keeps it."""
        return {"generation": self.generation, "digest": self.digest, "version": self.version,
                "at": self.at, "who": self.who, "end": self.end}

    @classmethod
    def from_store(cls, doc: dict[str, Any]) -> Deployment:
        """Back from :meth:`to_store` (unknown keys ignored: an older or newer mesh wrote it)."""
        return cls(int(doc["generation"]), str(doc["digest"]), str(doc.get("version", "")),
                   float(doc.get("at", 0.0)), str(doc.get("who", "")), str(doc.get("end", "")))


def _current(records: Sequence[Deployment]) -> int | None:
    for index in range(len(records) - 1, -1, -1):
        if not records[index].end:
            return index
    return None


def published(records: Sequence[Deployment], plan: Plan, who: str, version: str,
              keep: int = DEFAULT_KEEP) -> list[Deployment]:
    """A new plan was published: the current deployment is superseded, the new one runs."""
    out = [replace(r, end=SUPERSEDED) if not r.end else r for r in records]
    out.append(Deployment(plan.generation, plan.digest, version, plan.published_at, who))
    return out[-max(1, keep):]


def failed(records: Sequence[Deployment], digest: str, reason: str, canary: bool,
           restored: str | None) -> list[Deployment]:
    """The current deployment of ``digest`` failed (``canary``: a canary reverted); the most
    recent superseded deployment of ``restored``, which runs again, is current again."""
    out = list(records)
    index = _current(out)
    if index is None or out[index].digest != digest:
        return out
    out[index] = replace(out[index], end=("rolled back: " if canary else "failed: ") + reason)
    if restored is not None:
        for back in range(index - 1, -1, -1):
            if out[back].digest == restored and out[back].end == SUPERSEDED:
                out[back] = replace(out[back], end="")
                break
    return out


def stopped(records: Sequence[Deployment]) -> list[Deployment]:
    """The app was stopped: its current deployment ran and ends ``succeeded``."""
    return [replace(r, end=SUCCEEDED) if not r.end else r for r in records]


def rollback_target(records: Sequence[Deployment], to: str = "",
                    current: str | None = None) -> Deployment:
    """The deployment ``rollback`` deploys again.

    Args:
        records: The app's history, oldest first.
        to: A generation (digits), a digest or its prefix; empty: the most recent superseded
            deployment of another digest than ``current``.
        current: The digest the app runs now.

    Raises:
        BadPlan: ``to`` names no deployment in the history (exit 2).
        NothingToRollBack: no earlier deployment ran successfully (exit 1).
    """
    if to:
        if to.isdigit():
            hits = [r for r in records if r.generation == int(to)]
        else:
            hits = [r for r in records if r.digest.startswith(to.lower())]
        if not hits:
            raise BadPlan(f"no deployment {to} in the history (see mycelium history)")
        return hits[-1]
    for record in reversed(records):
        if record.end == SUPERSEDED and record.digest != current:
            return record
    raise NothingToRollBack("nothing to roll back to: no earlier deployment ran successfully")


def history_doc(records: Sequence[Deployment]) -> list[dict[str, Any]]:
    """``mycelium history --json``: one object per deployment, oldest first."""
    return [r.to_doc() for r in records]
