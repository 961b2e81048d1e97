"""The OTP child operations a supervisor answers (start_child, terminate_child…).

Kept apart from the restart logic: these handlers run for the ``ask``s of
:mod:`supervisors.api`, and their OTP error outcomes are raised, so that Pykka hands them to
the caller's future. The supervisor composes a :class:`ChildOperations` over its child table
and hands it the few actions it needs (start, stop, report), so neither reaches into the
other's internals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from supervisors.children import Child
from supervisors.errors import (
    AlreadyPresent,
    AlreadyStarted,
    MaxChildren,
    NotFound,
    Restarting,
    Running,
    SpecError,
    StartError,
)
from supervisors.spec import Backoff, ChildSpec, SupFlags, check_specs

__all__ = ["ChildOperations", "DynamicRules"]


@dataclass(frozen=True, slots=True)
class DynamicRules:
    """What makes a supervisor a DynamicSupervisor (Elixir's): its children are forgotten
    once they stop for good, stopped concurrently at shutdown, at most ``max_children`` of
    them, and ``backoff`` applies to every child whose spec has none."""

    max_children: int | None = None
    backoff: Backoff | None = None


Report = Callable[..., None]  # report(event, child, reason=...)


class ChildOperations:
    """OTP's child operations over a supervisor's child table (ids in start order).

    Args:
        children: The supervisor's table (shared, not copied: the supervisor's restarts and
            these operations work on the same records, always on the supervisor's thread).
        flags: The supervisor's flags (to check new specs).
        path: The supervisor's path, for error messages.
        dynamic: The DynamicSupervisor's rules, or ``None`` for a plain supervisor.
        start: Starts a child's incarnation (raises StartError).
        terminate: Stops children one after the other.
        cancel_restart: Cancels the pending restart a child's crash caused.
        report: Emits a report.
    """

    def __init__(self, children: dict[str, Child], flags: SupFlags, path: str,
                 dynamic: DynamicRules | None, *, start: Callable[[Child], None],
                 terminate: Callable[[list[Child]], None],
                 cancel_restart: Callable[[Child], None], report: Report) -> None:
        self._children = children
        self._flags = flags
        self._path = path
        self._dynamic = dynamic
        self._start = start
        self._terminate = terminate
        self._cancel_restart = cancel_restart
        self._report = report

    @property
    def kind(self) -> str:
        """``supervisor`` or ``dynamic_supervisor``."""
        return "supervisor" if self._dynamic is None else "dynamic_supervisor"

    def get(self, child_id: str) -> Child:
        """The child's record.

        Raises:
            NotFound: No such child.
        """
        child = self._children.get(child_id)
        if child is None:
            raise NotFound(f"{self._path}: no child {child_id!r}")
        return child

    def start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        """OTP ``start_child``: add the child and start it.

        Raises:
            SpecError, AlreadyStarted, AlreadyPresent, MaxChildren, StartError.
        """
        if not isinstance(spec, ChildSpec):
            raise SpecError(f"start_child needs a ChildSpec; got {spec!r}")
        dynamic = self._dynamic
        if dynamic is not None and spec.backoff is None and dynamic.backoff is not None:
            spec = dataclasses.replace(spec, backoff=dynamic.backoff)
        check_specs([spec], self._flags)
        existing = self._children.get(spec.id)
        if existing is not None:
            if existing.ref is not None:
                raise AlreadyStarted(f"{self._path}: {spec.id!r} already started", existing.ref)
            raise AlreadyPresent(f"{self._path}: {spec.id!r} already present")
        limit = dynamic.max_children if dynamic is not None else None
        if limit is not None and len(self._children) >= limit:
            raise MaxChildren(f"{self._path}: already {limit} children (max_children)")
        child = self._children[spec.id] = Child(spec)
        try:
            self._start(child)
        except StartError as exc:
            del self._children[spec.id]
            self._report("start_error", child, reason=exc.reason)
            raise
        assert child.ref is not None
        return child.ref

    def terminate_child(self, child_id: str) -> None:
        """OTP ``terminate_child`` (a DynamicSupervisor then forgets it).

        Raises:
            NotFound: No such child.
        """
        child = self.get(child_id)
        self._cancel_restart(child)
        self._terminate([child])
        if self._dynamic is not None:
            self._children.pop(child_id, None)

    def restart_child(self, child_id: str) -> pykka.ActorRef[Any]:
        """OTP ``restart_child`` of a stopped child.

        Raises:
            NotFound, Running, Restarting, StartError.
        """
        child = self._stopped(child_id)
        try:
            self._start(child)
        except StartError as exc:
            self._report("start_error", child, reason=exc.reason)
            raise
        assert child.ref is not None
        return child.ref

    def delete_child(self, child_id: str) -> None:
        """OTP ``delete_child`` of a stopped child.

        Raises:
            NotFound, Running, Restarting.
        """
        self._stopped(child_id)
        del self._children[child_id]

    def _stopped(self, child_id: str) -> Child:
        child = self.get(child_id)
        if child.ref is not None:
            raise Running(f"{self._path}: {child_id!r} is running")
        if child.status == "restarting":
            raise Restarting(f"{self._path}: {child_id!r} is waiting to restart")
        return child

    def count(self) -> dict[str, int]:
        """OTP ``count_children``."""
        children = list(self._children.values())
        return {
            "specs": len(children),
            "active": sum(c.ref is not None for c in children),
            "supervisors": sum(c.spec.type == "supervisor" for c in children),
            "workers": sum(c.spec.type == "worker" for c in children),
        }

    def describe(self) -> dict[str, Any]:
        """Path, kind, flags and the children (a DynamicSupervisor adds ``max_children``)."""
        description: dict[str, Any] = {
            "path": self._path,
            "kind": self.kind,
            "strategy": self._flags.strategy,
            "intensity": self._flags.intensity,
            "period": self._flags.period,
            "children": [child.info() for child in self._children.values()],
        }
        if self._dynamic is not None:
            description["max_children"] = self._dynamic.max_children
        return description
