"""Functions to talk to a running supervisor by its ref (OTP's ``supervisor:*`` calls).

Each one is an ``ask`` with a timeout; OTP's error outcomes are raised as exceptions
(:class:`NotFound`, :class:`Running`…), and a dead or unresponsive supervisor raises
:class:`SupervisorNotRunning` instead of hanging.
"""

from __future__ import annotations

from typing import Any, Literal

import pykka

from supervisors.actor import Exit, SupervisedActor, actor_of, recent_exit
from supervisors.errors import SupervisorError, SupervisorNotRunning
from supervisors.messages import (
    ChildInfo,
    CountChildren,
    DeleteChild,
    Describe,
    GetChildSpec,
    RestartChild,
    StartChild,
    TerminateChild,
    WhichChildren,
)
from supervisors.spec import ChildSpec
from supervisors.supervisor import Supervisor

__all__ = [
    "count_children",
    "delete_child",
    "describe",
    "get_childspec",
    "restart_child",
    "start_child",
    "terminate_child",
    "wait_exit",
    "which_children",
]

DEFAULT_TIMEOUT = 5.0


def call(ref: pykka.ActorRef[Any], message: object, timeout: float | None) -> Any:
    """Ask a supervisor; turn a dead or silent one into :class:`SupervisorNotRunning`.

    Raises:
        SupervisorError: If ``ref`` is not a supervisor's ref.
        SupervisorNotRunning: If it is dead or did not answer within ``timeout``.
    """
    if not isinstance(ref, pykka.ActorRef):
        raise SupervisorError(f"expected a supervisor's ActorRef; got {ref!r}")
    actor = actor_of(ref)
    if actor is not None and not isinstance(actor, Supervisor):
        raise SupervisorError(f"{ref} is not a supervisor")
    try:
        return ref.ask(message, timeout=timeout)
    except pykka.ActorDeadError as exc:
        raise SupervisorNotRunning(f"supervisor {ref} is not running") from exc
    except pykka.Timeout as exc:
        raise SupervisorNotRunning(f"supervisor {ref} did not answer within {timeout} s") from exc


def which_children(ref: pykka.ActorRef[Any], timeout: float = DEFAULT_TIMEOUT) -> list[ChildInfo]:
    """The children in start order.

    Raises:
        SupervisorNotRunning: If the supervisor is dead or does not answer.
    """
    result: list[ChildInfo] = call(ref, WhichChildren(), timeout)
    return result


def count_children(ref: pykka.ActorRef[Any], timeout: float = DEFAULT_TIMEOUT) -> dict[str, int]:
    """OTP's counters: ``specs``, ``active``, ``supervisors``, ``workers``.

    Raises:
        SupervisorNotRunning: If the supervisor is dead or does not answer.
    """
    result: dict[str, int] = call(ref, CountChildren(), timeout)
    return result


def start_child(
    ref: pykka.ActorRef[Any], spec: ChildSpec, timeout: float | None = DEFAULT_TIMEOUT
) -> pykka.ActorRef[Any]:
    """Add a child and start it; returns its ref once its ``on_start`` finished.

    Raises:
        AlreadyStarted: A child with that id runs (``.ref`` is it).
        AlreadyPresent: A child with that id exists, stopped.
        MaxChildren: A DynamicSupervisor is full.
        SpecError: The spec is invalid for this supervisor.
        StartError: The child failed to start (it is not kept).
        SupervisorNotRunning: If the supervisor is dead or does not answer.
    """
    result: pykka.ActorRef[Any] = call(ref, StartChild(spec), timeout)
    return result


def terminate_child(
    ref: pykka.ActorRef[Any],
    child_id: str,
    timeout: float | Literal["auto"] | None = "auto",
) -> None:
    """Stop a child by its shutdown policy; its spec is kept (not for temporary children,
    nor under a DynamicSupervisor). Returns once the child's cleanup finished (or it was
    given up on as killed).

    Args:
        ref: The supervisor.
        child_id: The child.
        timeout: ``"auto"`` waits the child's own shutdown time plus 5 s (no limit for
            ``infinity``), so a slow but legitimate stop is not mistaken for a dead
            supervisor; seconds, or ``None`` for no limit.

    Raises:
        NotFound: No such child.
        SupervisorNotRunning: If the supervisor is dead or does not answer.
    """
    if timeout == "auto":
        policy = get_childspec(ref, child_id).shutdown_policy
        if policy == "infinity":
            timeout = None
        else:
            timeout = DEFAULT_TIMEOUT + (0.0 if policy == "brutal_kill" else float(policy))
    call(ref, TerminateChild(child_id), timeout)


def restart_child(
    ref: pykka.ActorRef[Any], child_id: str, timeout: float | None = DEFAULT_TIMEOUT
) -> pykka.ActorRef[Any]:
    """Start a stopped child again from its kept spec.

    Raises:
        NotFound: No such child.
        Running: It is running.
        Restarting: It waits for a backoff restart.
        StartError: It failed to start.
        SupervisorNotRunning: If the supervisor is dead or does not answer.
    """
    result: pykka.ActorRef[Any] = call(ref, RestartChild(child_id), timeout)
    return result


def delete_child(
    ref: pykka.ActorRef[Any], child_id: str, timeout: float | None = DEFAULT_TIMEOUT
) -> None:
    """Forget a stopped child's spec.

    Raises:
        NotFound: No such child.
        Running: It is running.
        Restarting: It waits for a backoff restart.
        SupervisorNotRunning: If the supervisor is dead or does not answer.
    """
    call(ref, DeleteChild(child_id), timeout)


def get_childspec(
    ref: pykka.ActorRef[Any], child_id: str, timeout: float = DEFAULT_TIMEOUT
) -> ChildSpec:
    """A child's spec.

    Raises:
        NotFound: No such child.
        SupervisorNotRunning: If the supervisor is dead or does not answer.
    """
    result: ChildSpec = call(ref, GetChildSpec(child_id), timeout)
    return result


def describe(ref: pykka.ActorRef[Any], timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """One supervisor's own description: path, kind, flags and its children's ChildInfo.

    Raises:
        SupervisorNotRunning: If the supervisor is dead or does not answer.
    """
    result: dict[str, Any] = call(ref, Describe(), timeout)
    return result


def wait_exit(ref: pykka.ActorRef[Any], timeout: float | None = None) -> Exit | None:
    """Wait until a supervisor (or any SupervisedActor) is gone and its cleanup finished.

    For the top of a tree, which has no parent to tell: e.g. a program exits once its root
    supervisor gave up (``shutdown``, with ``details["cause"]`` ``reached_max_restart_intensity``).

    Args:
        ref: The actor's ref.
        timeout: Seconds to wait; ``None`` waits as long as it takes.

    Returns:
        How it ended, or ``None`` if it still runs after ``timeout``.

    Raises:
        SupervisorError: If ``ref`` is not a SupervisedActor's ref.
    """
    actor = actor_of(ref) if isinstance(ref, pykka.ActorRef) else None
    if actor is None and isinstance(ref, pykka.ActorRef):
        # Already finished and collected (refs hold actors weakly): its exit was recorded.
        finished = recent_exit(ref.actor_urn)
        if finished is not None:
            return finished
    if not isinstance(actor, SupervisedActor):
        raise SupervisorError(f"{ref!r} is not a SupervisedActor's ref")
    return actor.exit if actor.sv_done.wait(timeout) else None
