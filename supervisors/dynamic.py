"""DynamicSupervisor: a one_for_one supervisor whose children are all added at run time.

Like Elixir's DynamicSupervisor (and OTP's simple_one_for_one): children start empty, are
added with ``start_child(ref, spec)`` (any ChildSpec, ids unique), are forgotten once they
stop for good (terminated, or exited without restart), and are shut down concurrently: every
child is asked to stop at once, then each is awaited up to its own shutdown timeout. It is a
:class:`~supervisors.supervisor.Supervisor` given :class:`~supervisors.operations.DynamicRules`.
"""

from __future__ import annotations

from supervisors.errors import SpecError
from supervisors.operations import DynamicRules
from supervisors.reports import Reporter
from supervisors.spec import Backoff, SupFlags
from supervisors.supervisor import Supervisor

__all__ = ["DynamicSupervisor"]


class DynamicSupervisor(Supervisor):
    """A supervisor for children added at run time (one_for_one only).

    ``DynamicSupervisor.start(path=..., max_children=None, reporter=None, backoff=None,
    intensity=3, period=5.0)``; the intensity defaults are Elixir's DynamicSupervisor's.
    ``backoff`` is applied to every child whose spec has none.
    """

    def __init__(
        self,
        path: str = "dynamic",
        max_children: int | None = None,
        reporter: Reporter | None = None,
        backoff: Backoff | None = None,
        intensity: int = 3,
        period: float = 5.0,
    ) -> None:
        flags = SupFlags("one_for_one", intensity=intensity, period=period)
        if max_children is not None and (
            not isinstance(max_children, int) or isinstance(max_children, bool) or max_children < 0
        ):
            raise SpecError(f"max_children must be an int >= 0 or None; got {max_children!r}")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise SpecError(f"backoff must be a Backoff or None; got {backoff!r}")
        super().__init__(flags, (), path, reporter, dynamic=DynamicRules(max_children, backoff))
        self.max_children = max_children
        self.backoff = backoff
