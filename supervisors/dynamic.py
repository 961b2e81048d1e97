"""DynamicSupervisor: a one_for_one supervisor whose children are all added at run time.

Like Elixir's DynamicSupervisor (and OTP's simple_one_for_one): children start empty, are
added with ``start_child(ref, spec)`` (any ChildSpec, ids unique), are forgotten once they
stop for good (terminated, or exited without restart), and are shut down concurrently: every
child is asked to stop at once, then each is awaited up to its own shutdown timeout.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pykka

from supervisors.children import Child, request_stop
from supervisors.errors import MaxChildren, SpecError
from supervisors.reports import Reporter
from supervisors.spec import Backoff, ChildSpec, SupFlags
from supervisors.supervisor import Supervisor

__all__ = ["DynamicSupervisor"]


class DynamicSupervisor(Supervisor):
    """A supervisor for children added at run time (one_for_one only).

    ``DynamicSupervisor.start(path=..., max_children=None, reporter=None, backoff=None,
    intensity=3, period=5.0)``; the intensity defaults are Elixir's DynamicSupervisor's.
    ``backoff`` is applied to every child whose spec has none.
    """

    kind = "dynamic_supervisor"
    _forget_stopped = True

    def __init__(
        self,
        path: str = "dynamic",
        max_children: int | None = None,
        reporter: Reporter | None = None,
        backoff: Backoff | None = None,
        intensity: int = 3,
        period: float = 5.0,
    ) -> None:
        super().__init__(
            SupFlags("one_for_one", intensity=intensity, period=period), (), path, reporter
        )
        if max_children is not None and (
            not isinstance(max_children, int) or isinstance(max_children, bool) or max_children < 0
        ):
            raise SpecError(f"max_children must be an int >= 0 or None; got {max_children!r}")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise SpecError(f"backoff must be a Backoff or None; got {backoff!r}")
        self.max_children = max_children
        self.backoff = backoff

    def _check_capacity(self) -> None:
        if self.max_children is not None and len(self._children) >= self.max_children:
            raise MaxChildren(f"{self.path}: already {self.max_children} children (max_children)")

    def _api_start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        if isinstance(spec, ChildSpec) and spec.backoff is None and self.backoff is not None:
            spec = dataclasses.replace(spec, backoff=self.backoff)
        return super()._api_start_child(spec)

    def _stop_all(self, children: list[Child]) -> None:
        since = time.monotonic()
        stopping = [(child, child.actor) for child in children]
        for child in children:
            if child.ref is not None:
                request_stop(child.ref)
            child.clear()
        for child, actor in stopping:
            if actor is not None:
                self._await(child, actor, since)
        self._children.clear()

    def _describe(self) -> dict[str, Any]:
        description = super()._describe()
        description["max_children"] = self.max_children
        return description
