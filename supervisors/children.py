"""The supervisor's record of one child, and how a child incarnation is started and stopped.

Stopping is split in two (``request_stop`` then ``await_stopped``) so that one supervisor
stops children one by one in reverse order while a DynamicSupervisor asks all of them at once
and then waits. What "forced" means for Pykka: a thread cannot be pre-empted and ``stop`` is
queued behind earlier messages, so when the graceful wait runs out (or at once for
``brutal_kill``) the supervisor stops waiting, marks the child killed and moves on; the old
actor still stops when it reaches the stop message. ``infinity`` waits as long as it takes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pykka

from supervisors.actor import SupervisedActor, actor_of, exit_of, recent_exit
from supervisors.errors import StartError
from supervisors.messages import ChildInfo
from supervisors.spec import ChildSpec, Shutdown

__all__ = ["Child", "await_stopped", "request_stop", "start_incarnation"]


@dataclass(slots=True)
class Child:
    """A supervisor's private, mutable record of one child (never leaves its actor).

    Attributes:
        spec: The child spec.
        ref: The current incarnation's ref, ``None`` when not running.
        actor: The current incarnation's actor object (to wait on its cleanup).
        status: ``running``, ``restarting`` or ``undefined``.
        restarts: Restarts done by the supervisor.
        started_at: Epoch seconds of the current incarnation's start.
        started_mono: Monotonic time of the same, to measure a stable run for backoff.
        backoff_step: Consecutive backoff restarts (the next delay's exponent).
        pending: Sequence number of the backoff timer this child waits for.
    """

    spec: ChildSpec
    ref: pykka.ActorRef[Any] | None = None
    actor: SupervisedActor | None = None
    status: str = "undefined"
    restarts: int = 0
    started_at: float | None = None
    started_mono: float = 0.0
    backoff_step: int = 0
    pending: int | None = None

    def info(self) -> ChildInfo:
        """The child as an immutable :class:`ChildInfo`."""
        return ChildInfo(
            id=self.spec.id,
            ref=self.ref,
            type=self.spec.type,
            status=self.status,
            restarts=self.restarts,
            started_at=self.started_at,
            meta=dict(self.spec.meta),
        )

    def clear(self) -> None:
        """Forget the incarnation: no ref, status ``undefined``, no pending restart."""
        self.ref = None
        self.actor = None
        self.status = "undefined"
        self.started_at = None
        self.pending = None


def start_incarnation(spec: ChildSpec) -> tuple[pykka.ActorRef[Any], SupervisedActor]:
    """Call ``spec.start`` and wait until the new actor's ``on_start`` finished.

    Waiting makes starts synchronous, as in OTP: a child that fails in ``on_start`` is a
    start error, and it has finished dying before the error is raised. Its reason is the
    actor's own (as OTP's ``{failed_to_start_child, Id, Reason}``), read from the exit it
    recorded even when the dead actor was already collected.

    Args:
        spec: The child spec.

    Returns:
        The ref and actor of the started child.

    Raises:
        StartError: If ``start`` raised, returned something other than a SupervisedActor's
            ref, or the actor failed in ``on_start``.
    """
    try:
        ref = spec.start()
    except StartError as exc:
        raise StartError(spec.id, str(exc)) from exc
    except Exception as exc:
        raise StartError(spec.id, exit_of(exc).reason) from exc
    actor = actor_of(ref) if isinstance(ref, pykka.ActorRef) else None
    if actor is None and isinstance(ref, pykka.ActorRef):
        # Already dead and collected (a ref holds its actor weakly): the exit it recorded on
        # the way out is the real reason, as OTP's {failed_to_start_child, Id, Reason}.
        ended = recent_exit(ref.actor_urn)
        if ended is not None:
            raise StartError(spec.id, ended.reason)
    if not isinstance(actor, SupervisedActor):
        if isinstance(ref, pykka.ActorRef):
            ref.stop(block=False)
        raise StartError(spec.id, f"start must return the ref of a SupervisedActor; got {ref!r}")
    actor.sv_started.wait()
    failure = actor.start_failure
    if failure is not None:
        actor.sv_done.wait()
        raise StartError(spec.id, failure.reason)
    return ref, actor


def request_stop(ref: pykka.ActorRef[Any]) -> None:
    """Queue a stop for the actor (a no-op if it is already dead)."""
    ref.stop(block=False)


def await_stopped(actor: SupervisedActor, policy: Shutdown, since: float) -> bool:
    """Wait for a stopping child's cleanup according to its shutdown policy.

    Args:
        actor: The stopping actor.
        policy: Seconds, ``"brutal_kill"`` (do not wait) or ``"infinity"``.
        since: Monotonic time the stop was requested (the graceful wait counts from there).

    Returns:
        ``True`` if it finished in time, ``False`` if it was given up on ("killed").
    """
    if policy == "brutal_kill":
        return actor.sv_done.is_set()
    if policy == "infinity":
        actor.sv_done.wait()
        return True
    return actor.sv_done.wait(max(0.0, since + float(policy) - time.monotonic()))
