"""The supervisors exception tree.

The library is generic and never imports mycelium, so the root is :class:`SupervisorError`
(an ``Exception``); it carries an ``exit_code`` like ``mycelium.errors`` so a CLI can treat
both trees alike. OTP's tagged outcomes (``already_present``, ``running``…) are subclasses,
so callers match on the type instead of comparing tuples.
"""

from __future__ import annotations

__all__ = [
    "AlreadyPresent",
    "AlreadyStarted",
    "MaxChildren",
    "NotFound",
    "Restarting",
    "Running",
    "SpecError",
    "StartError",
    "SupervisorError",
    "SupervisorNotRunning",
]


class SupervisorError(Exception):
    """Any failure reported by the supervisors library.

    Attributes:
        exit_code: The CLI exit code for this failure (1 failed, 2 bad input).
    """

    exit_code: int = 1


class SpecError(SupervisorError, ValueError):
    """A ChildSpec, SupFlags or Backoff field is invalid, or child ids are duplicated."""

    exit_code = 2


class StartError(SupervisorError):
    """A child failed to start; the children started before it were stopped again.

    Attributes:
        child_id: The id of the child whose start failed.
        reason: Why it failed (the exception's ``reason`` attribute or its repr).
    """

    def __init__(self, child_id: str, reason: str) -> None:
        super().__init__(f"child {child_id!r} failed to start: {reason}")
        self.child_id = child_id
        self.reason = reason


class SupervisorNotRunning(SupervisorError):
    """The supervisor asked is dead or did not answer in time."""


class AlreadyPresent(SupervisorError):
    """``start_child``: a child with that id exists but is not running (OTP already_present)."""


class AlreadyStarted(SupervisorError):
    """``start_child``: a child with that id is running (OTP already_started).

    Attributes:
        ref: The running child's ActorRef.
    """

    def __init__(self, message: str, ref: object = None) -> None:
        super().__init__(message)
        self.ref = ref


class Running(SupervisorError):
    """``restart_child``/``delete_child``: the child is running (OTP running)."""


class Restarting(SupervisorError):
    """``restart_child``/``delete_child``: the child waits for a backoff restart."""


class NotFound(SupervisorError):
    """No child with that id (OTP not_found)."""


class MaxChildren(SupervisorError):
    """``start_child`` on a DynamicSupervisor that already has ``max_children``."""
