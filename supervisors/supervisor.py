"""The Supervisor actor: starts children in order, restarts them by strategy, gives up by
intensity, stops them in reverse order.

A thin actor over pure decisions (:mod:`supervisors.intensity`). Children find their way back
only by id: a restart is a new actor with a new ref. Every child death arrives as a
:class:`~supervisors.messages.ChildExited` message after the child's cleanup, so a replacement
never races its predecessor for a resource; exits the supervisor caused itself (it compares
the incarnation's urn) are stale and ignored.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import pykka

from supervisors.actor import Exit, SupervisedActor, actor_of, exit_of
from supervisors.children import Child, await_stopped, request_stop, start_incarnation
from supervisors.errors import (
    SpecError,
    StartError,
)
from supervisors.intensity import add_restart, backoff_delay, next_backoff_step, restart_plan
from supervisors.messages import (
    ChildExited,
    CountChildren,
    DeleteChild,
    Describe,
    GetChildSpec,
    RestartChild,
    RestartDue,
    RetryRestart,
    StartChild,
    TerminateChild,
    WhichChildren,
)
from supervisors.operations import ChildOperations, DynamicRules
from supervisors.reports import Report, Reporter, emit
from supervisors.singleton import Singleton
from supervisors.spec import ChildSpec, SupFlags, check_specs
from supervisors.timers import TimerHandle, call_later

__all__ = ["Supervisor"]

# One jitter source for every supervisor (a Random holds 2.5 KB of state; a mesh has hundreds
# of supervisors). Its methods are atomic under the GIL; a forked child seeds its own.
_jitter: Singleton[random.Random] = Singleton(random.Random)


def _tell_quietly(ref: pykka.ActorRef[Any], message: object) -> None:
    with contextlib.suppress(pykka.ActorDeadError):  # the supervisor is gone: nobody cares
        ref.tell(message)


class Supervisor(SupervisedActor):
    """An OTP supervisor as a Pykka actor (itself supervisable: it is a SupervisedActor).

    Start it with ``Supervisor.start(flags, children, path=..., reporter=...)``; like OTP's
    ``start_link`` this returns only once every child started, and raises
    :class:`~supervisors.StartError` otherwise (the started ones are stopped again in reverse).
    Talk to it with the functions of :mod:`supervisors.api`.

    Restarts through backoff count against intensity when they are decided (at the crash),
    not when the delayed start happens, so a crash loop slowed by backoff still ends in
    ``reached_max_restart_intensity`` if it crashes more than ``intensity`` times within
    ``period``; size ``period`` with the backoff delays in mind. Then, like OTP's, it exits
    ``shutdown`` (``details["cause"]`` names the intensity): only a permanent parent restarts it.

    Supervisors are pooled (:mod:`supervisors.pool`): they idle almost always, so they borrow a
    thread per turn instead of holding one each.
    """

    pooled = True

    def __init__(
        self,
        flags: SupFlags | None = None,
        children: Iterable[ChildSpec] = (),
        path: str = "supervisor",
        reporter: Reporter | None = None,
        *,
        dynamic: DynamicRules | None = None,
    ) -> None:
        super().__init__()
        flags = SupFlags() if flags is None else flags
        if not isinstance(flags, SupFlags):
            raise SpecError(f"flags must be a SupFlags; got {flags!r}")
        if isinstance(children, ChildSpec) or not isinstance(children, Iterable):
            raise SpecError(f"children must be a list of ChildSpec; got {children!r}")
        specs = list(children)
        check_specs(specs, flags)
        if not isinstance(path, str) or not path:
            raise SpecError(f"path must be a non-empty string; got {path!r}")
        self.flags = flags
        self.path = path
        self.reporter = reporter
        self._children: dict[str, Child] = {spec.id: Child(spec) for spec in specs}
        self._restart_times: tuple[float, ...] = ()
        self._timers: dict[int, tuple[str, TimerHandle]] = {}  # seq -> (crashed child, timer)
        self._seq = itertools.count(1)
        self._random = _jitter()
        self._start_error: StartError | None = None
        self._exit_reason = "shutdown"
        self._dynamic = dynamic
        self._ops = ChildOperations(
            self._children, flags, path, dynamic, start=self._start,
            terminate=self._terminate_many, cancel_restart=self._cancel_restart_of,
            report=self._report)

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Any]:
        """Start the supervisor and all its children; return once they all started.

        Raises:
            SpecError: If the flags or child specs are invalid (nothing was started).
            StartError: If a child failed to start (those started before it were stopped).
        """
        ref = super().start(*args, **kwargs)
        actor = actor_of(ref)
        assert isinstance(actor, Supervisor)  # the ref we just got keeps it alive
        actor.sv_started.wait()
        if actor.start_failure is not None:
            actor.sv_done.wait()
            error = actor._start_error
            raise error if error is not None else StartError("?", actor.start_failure.reason)
        return ref

    # -- life cycle ------------------------------------------------------------------------

    def on_start(self) -> None:
        """Start the children in order (OTP ``init``); undo and fail on the first error."""
        try:
            self._start_in_order(list(self._children))
        except StartError as exc:
            self._start_error = exc
            raise

    def on_stop(self) -> None:
        """Stop every child in reverse start order, then report the supervisor's shutdown."""
        self._shutdown()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """A bug in the supervisor itself: still stop the children, never leave orphans."""
        if exception_value is not None:
            self._exit_reason = exit_of(exception_value).reason
        self._shutdown()

    def _shutdown(self) -> None:
        for _cause, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._stop_all(list(reversed(self._children.values())))
        self._report("shutdown", reason=self._exit_reason)

    # -- messages --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Dispatch child exits, timers and the API's asks."""
        match message:
            case ChildExited(child_id, urn, exit_):
                self._child_exited(child_id, urn, exit_)
            case RestartDue(child_ids, seq):
                self._timers.pop(seq, None)
                due = [i for i in child_ids if self._pending_is(i, seq)]
                self._restart_group(due)
            case RetryRestart(child_id, reason):
                self._retry(child_id, reason)
            case StartChild(spec):
                return self._ops.start_child(spec)
            case TerminateChild(child_id):
                self._ops.terminate_child(child_id)
            case RestartChild(child_id):
                return self._ops.restart_child(child_id)
            case DeleteChild(child_id):
                self._ops.delete_child(child_id)
            case GetChildSpec(child_id):
                return self._ops.get(child_id).spec
            case WhichChildren():
                return [child.info() for child in self._children.values()]
            case CountChildren():
                return self._ops.count()
            case Describe():
                return self._ops.describe()
            case _:
                return super().on_receive(message)
        return None

    # -- crashes and restarts --------------------------------------------------------------

    def _child_exited(self, child_id: str, urn: str, exit_: Exit) -> None:
        child = self._children.get(child_id)
        if child is None or child.ref is None or child.ref.actor_urn != urn:
            return  # an incarnation this supervisor stopped itself, already handled
        up_for = time.monotonic() - child.started_mono
        child.clear()
        self._report("child_terminated", child, reason=exit_.reason, extra=exit_.details)
        spec = child.spec
        if spec.restart == "permanent" or (spec.restart == "transient" and not exit_.normal):
            self._restart(child, exit_, up_for)
            return
        if spec.restart == "temporary" or self._dynamic is not None:  # forgotten
            del self._children[child_id]
        if spec.significant:
            self._maybe_auto_shutdown()

    def _restart(self, child: Child, exit_: Exit, up_for: float) -> None:
        allowed, self._restart_times = add_restart(
            self._restart_times, time.monotonic(), self.flags.intensity, self.flags.period
        )
        if not allowed:
            self._report(
                "reached_max_restart_intensity",
                child,
                reason=exit_.reason,
                extra={"intensity": self.flags.intensity, "period": self.flags.period},
            )
            # OTP exits with reason shutdown here: a transient parent does not restart it, a
            # permanent one does; the cause rides along for the parent's report and the root.
            self._exit_reason = "reached_max_restart_intensity"
            self.exit_with("shutdown", {"cause": self._exit_reason})
            return
        stop_ids, start_ids = restart_plan(self.flags.strategy, list(self._children), child.spec.id)
        self._terminate_many([self._children[i] for i in stop_ids])
        start_ids = [i for i in start_ids if i in self._children]  # temporary ones are gone
        policy = child.spec.backoff
        if policy is None:
            self._restart_group(start_ids)
            return
        step = next_backoff_step(child.backoff_step, up_for, policy)
        child.backoff_step = step + 1
        delay = backoff_delay(policy, step, self._random)
        seq = next(self._seq)
        for i in start_ids:
            self._children[i].status = "restarting"
            self._children[i].pending = seq
        self._report("backoff", child, reason=exit_.reason, delay=delay, extra={"step": step})
        me = self.actor_ref
        message = RestartDue(tuple(start_ids), seq)
        self._timers[seq] = (child.spec.id, call_later(delay, lambda: _tell_quietly(me, message)))

    def _restart_group(self, ids: list[str]) -> None:
        for child_id in ids:
            child = self._children.get(child_id)
            if child is None or child.ref is not None:
                continue
            try:
                self._start(child)
            except StartError as exc:
                # OTP's try_again: only the failed child is "restarting"; the rest of the
                # group stay undefined and start when its retry restarts its group again.
                self._report("start_error", child, reason=exc.reason)
                child.status = "restarting"
                _tell_quietly(self.actor_ref, RetryRestart(child_id, exc.reason))
                return
            child.restarts += 1
            self._report("child_restarted", child, extra={"restarts": child.restarts})

    def _retry(self, child_id: str, reason: str) -> None:
        """Retry a restart that failed to start, as a new restart of that child (its group by
        the strategy, counted against intensity); if it was terminated, deleted or restarted
        meanwhile, nothing (OTP leaves the rest of its group stopped)."""
        child = self._children.get(child_id)
        if child is None or child.ref is not None or child.status != "restarting":
            return
        self._restart(child, Exit(reason=reason, normal=False), up_for=0.0)

    def _cancel_restart_of(self, child: Child) -> None:
        """The child whose crash a backoff restart waits for is terminated: cancel that
        restart, leaving its group stopped (``undefined``), as OTP leaves a failed group."""
        seq = child.pending
        if seq is None or seq not in self._timers or self._timers[seq][0] != child.spec.id:
            return
        _crashed, handle = self._timers.pop(seq)
        handle.cancel()
        for other in self._children.values():
            if other.pending == seq:
                other.status, other.pending = "undefined", None

    def _is_down(self, child_id: str) -> bool:
        child = self._children.get(child_id)
        return child is not None and child.ref is None

    def _maybe_auto_shutdown(self) -> None:
        mode = self.flags.auto_shutdown
        if mode == "never":
            return
        if mode == "all_significant" and any(
            c.spec.significant and c.status != "undefined" for c in self._children.values()
        ):
            return
        self._exit_reason = "auto_shutdown"
        self.exit_with("shutdown")

    def _pending_is(self, child_id: str, seq: int) -> bool:
        return self._is_down(child_id) and self._children[child_id].pending == seq

    # -- starting and stopping children ----------------------------------------------------

    def _start(self, child: Child) -> None:
        ref, actor = start_incarnation(child.spec)
        child.ref, child.actor, child.status = ref, actor, "running"
        child.started_at, child.started_mono, child.pending = time.time(), time.monotonic(), None
        me, child_id, urn = self.actor_ref, child.spec.id, ref.actor_urn
        actor.watch(lambda exit_: _tell_quietly(me, ChildExited(child_id, urn, exit_)))
        self._report("started", child)

    def _start_in_order(self, ids: list[str]) -> None:
        started: list[Child] = []
        for child_id in ids:
            child = self._children[child_id]
            try:
                self._start(child)
            except StartError as exc:
                self._report("start_error", child, reason=exc.reason)
                self._terminate_many(list(reversed(started)))
                raise
            started.append(child)

    def _stop_all(self, children: list[Child]) -> None:
        """Stop every child at shutdown: one by one; a DynamicSupervisor asks all of them at
        once, then awaits each up to its own shutdown time (its nodes drain in parallel)."""
        if self._dynamic is None:
            self._terminate_many(children)
            return
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

    def _terminate_many(self, children: list[Child]) -> None:
        """Stop children one after the other, in the order given (callers pass reverse)."""
        for child in children:
            ref, actor = child.ref, child.actor
            child.clear()
            if ref is not None and actor is not None:
                request_stop(ref)
                self._await(child, actor, time.monotonic())
            if child.spec.restart == "temporary":
                self._children.pop(child.spec.id, None)

    def _await(self, child: Child, actor: SupervisedActor, since: float) -> None:
        policy = child.spec.shutdown_policy
        if not await_stopped(actor, policy, since):
            how = "brutal_kill" if policy == "brutal_kill" else f"no stop within {policy} s"
            self._report("shutdown", child, reason=f"killed ({how})")

    def _report(
        self,
        event: str,
        child: Child | None = None,
        reason: str | None = None,
        delay: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        merged: dict[str, Any] = dict(child.spec.meta) if child is not None else {}
        merged.update(extra or {})
        emit(
            self.reporter,
            Report(
                ts=time.time(),
                event=event,
                supervisor=self.path,
                child=child.spec.id if child is not None else None,
                reason=reason,
                delay=delay,
                extra=merged,
            ),
        )
