"""The OTP child operations a supervisor answers (start_child, terminate_child…).

A mixin of :class:`~supervisors.supervisor.Supervisor`, kept apart from the restart logic:
these handlers run for the ``ask``s of :mod:`supervisors.api`, and their OTP error outcomes
are raised, so that Pykka hands them to the caller's future.
"""

from __future__ import annotations

from typing import Any

import pykka

from supervisors.children import Child
from supervisors.errors import (
    AlreadyPresent,
    AlreadyStarted,
    NotFound,
    Restarting,
    Running,
    SpecError,
    StartError,
)
from supervisors.spec import ChildSpec, SupFlags, check_specs

__all__ = ["ChildOperations"]


class ChildOperations:
    """OTP's child operations over the supervisor's child table (ids in start order)."""

    kind = "supervisor"
    _forget_stopped = False  # a DynamicSupervisor forgets children that are not restarted
    _children: dict[str, Child]
    flags: SupFlags
    path: str

    # Provided by Supervisor (declared here for the type checker):

    def _start(self, child: Child) -> None:
        raise NotImplementedError

    def _terminate_many(self, children: list[Child]) -> None:
        raise NotImplementedError

    def _cancel_restart_of(self, child: Child) -> None:
        raise NotImplementedError

    def _report(self, event: str, child: Child | None = None, reason: str | None = None) -> None:
        raise NotImplementedError

    def _get(self, child_id: str) -> Child:
        child = self._children.get(child_id)
        if child is None:
            raise NotFound(f"{self.path}: no child {child_id!r}")
        return child

    def _api_start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        if not isinstance(spec, ChildSpec):
            raise SpecError(f"start_child needs a ChildSpec; got {spec!r}")
        check_specs([spec], self.flags)
        existing = self._children.get(spec.id)
        if existing is not None:
            if existing.ref is not None:
                raise AlreadyStarted(f"{self.path}: {spec.id!r} already started", existing.ref)
            raise AlreadyPresent(f"{self.path}: {spec.id!r} already present")
        self._check_capacity()
        child = self._children[spec.id] = Child(spec)
        try:
            self._start(child)
        except StartError as exc:
            del self._children[spec.id]
            self._report("start_error", child, reason=exc.reason)
            raise
        assert child.ref is not None
        return child.ref

    def _check_capacity(self) -> None:
        """Refuse one more child (a DynamicSupervisor's max_children); here: no limit."""

    def _api_terminate_child(self, child_id: str) -> None:
        child = self._get(child_id)
        self._cancel_restart_of(child)
        self._terminate_many([child])
        if self._forget_stopped:
            self._children.pop(child_id, None)

    def _api_restart_child(self, child_id: str) -> pykka.ActorRef[Any]:
        child = self._stopped(child_id)
        try:
            self._start(child)
        except StartError as exc:
            self._report("start_error", child, reason=exc.reason)
            raise
        assert child.ref is not None
        return child.ref

    def _api_delete_child(self, child_id: str) -> None:
        self._stopped(child_id)
        del self._children[child_id]

    def _stopped(self, child_id: str) -> Child:
        child = self._get(child_id)
        if child.ref is not None:
            raise Running(f"{self.path}: {child_id!r} is running")
        if child.status == "restarting":
            raise Restarting(f"{self.path}: {child_id!r} is waiting to restart")
        return child

    def _count(self) -> dict[str, int]:
        children = list(self._children.values())
        return {
            "specs": len(children),
            "active": sum(c.ref is not None for c in children),
            "supervisors": sum(c.spec.type == "supervisor" for c in children),
            "workers": sum(c.spec.type == "worker" for c in children),
        }

    def _describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "strategy": self.flags.strategy,
            "intensity": self.flags.intensity,
            "period": self.flags.period,
            "children": [child.info() for child in self._children.values()],
        }
