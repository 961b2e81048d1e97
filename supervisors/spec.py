"""Child specifications and supervisor flags, validated field by field like OTP's.

Each field has its own check raising :class:`SpecError` with the child id, the field, the
allowed values and what was given, so a bad spec fails at the boundary and never inside a
running supervisor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import pykka

from supervisors.errors import SpecError

__all__ = [
    "DEFAULT_WORKER_SHUTDOWN",
    "Backoff",
    "ChildSpec",
    "SupFlags",
    "check_specs",
]

Restart = Literal["permanent", "transient", "temporary"]
Shutdown = float | Literal["brutal_kill", "infinity"]
ChildType = Literal["worker", "supervisor"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
AutoShutdown = Literal["never", "any_significant", "all_significant"]

RESTARTS = ("permanent", "transient", "temporary")
TYPES = ("worker", "supervisor")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
AUTO_SHUTDOWNS = ("never", "any_significant", "all_significant")
DEFAULT_WORKER_SHUTDOWN = 5.0


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _one_of(where: str, name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{where}: {name} must be one of {', '.join(allowed)}; got {value!r}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Restart delay policy for a crash-looping child (beyond OTP; like k8s CrashLoopBackOff).

    The n-th consecutive restart waits ``min(cap, base * 2**n)`` seconds, spread by
    ``± jitter`` (a fraction of the delay); ``n`` goes back to 0 once the child stayed up for
    ``reset_after`` seconds.

    Raises:
        SpecError: If a field is out of range.
    """

    base: float = 0.1
    cap: float = 30.0
    jitter: float = 0.1
    reset_after: float = 10.0

    def __post_init__(self) -> None:
        where = "backoff"
        for name in ("base", "cap", "jitter", "reset_after"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise SpecError(f"{where}: {name} must be a finite number >= 0; got {value!r}")
        if self.base <= 0:
            raise SpecError(f"{where}: base must be > 0; got {self.base!r}")
        if self.cap < self.base:
            raise SpecError(f"{where}: cap must be >= base ({self.base}); got {self.cap!r}")
        if self.jitter > 1:
            raise SpecError(f"{where}: jitter must be a fraction in [0, 1]; got {self.jitter!r}")


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child (OTP's child_spec map).

    Attributes:
        id: Unique among its siblings; the only way the supervisor finds the child again,
            because a restart is a new actor with a new ref.
        start: Called with no arguments in the supervisor's thread; returns the ref of a
            started :class:`~supervisors.SupervisedActor`.
        restart: ``permanent`` (always restarted), ``transient`` (only after an abnormal exit)
            or ``temporary`` (never, and forgotten once it exits).
        shutdown: Seconds to wait for a graceful stop, ``"brutal_kill"`` or ``"infinity"``;
            ``None`` means 5.0 for a worker and ``"infinity"`` for a supervisor.
        type: ``worker`` or ``supervisor``.
        significant: Its own exit may shut the supervisor down (see ``SupFlags.auto_shutdown``).
        backoff: Delay restarts of this child; ``None`` restarts at once (OTP).
        meta: Copied into every report about this child (e.g. ``{"app": "hello"}``).

    Raises:
        SpecError: If a field is invalid; the message names the child and the field.
    """

    id: str
    start: Callable[[], pykka.ActorRef[Any]]
    restart: Restart = "permanent"
    shutdown: Shutdown | None = None
    type: ChildType = "worker"
    significant: bool = False
    backoff: Backoff | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise SpecError(f"child spec: id must be a non-empty string; got {self.id!r}")
        where = f"child spec {self.id!r}"
        if not callable(self.start):
            raise SpecError(f"{where}: start must be callable; got {self.start!r}")
        _one_of(where, "restart", self.restart, RESTARTS)
        _one_of(where, "type", self.type, TYPES)
        shutdown = self.shutdown
        if shutdown is not None and shutdown not in ("brutal_kill", "infinity") and not (
            isinstance(shutdown, int | float)
            and not isinstance(shutdown, bool)
            and math.isfinite(shutdown)
            and shutdown >= 0
        ):
            raise SpecError(
                f"{where}: shutdown must be seconds >= 0, 'brutal_kill' or 'infinity'; "
                f"got {shutdown!r}"
            )
        if not isinstance(self.significant, bool):
            raise SpecError(f"{where}: significant must be a bool; got {self.significant!r}")
        if self.significant and self.restart == "permanent":
            raise SpecError(f"{where}: a significant child cannot be permanent")
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            raise SpecError(f"{where}: backoff must be a Backoff or None; got {self.backoff!r}")
        if not isinstance(self.meta, Mapping):
            raise SpecError(f"{where}: meta must be a mapping; got {self.meta!r}")
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    @property
    def shutdown_policy(self) -> Shutdown:
        """The effective shutdown: the given one, else 5.0 s (worker) or infinity (supervisor)."""
        if self.shutdown is not None:
            return self.shutdown
        return "infinity" if self.type == "supervisor" else DEFAULT_WORKER_SHUTDOWN


@dataclass(frozen=True, slots=True)
class SupFlags:
    """Supervisor flags with OTP's defaults.

    Attributes:
        strategy: ``one_for_one``, ``one_for_all`` or ``rest_for_one``.
        intensity: Restarts allowed within ``period`` before the supervisor gives up.
        period: The sliding window for ``intensity``, in seconds.
        auto_shutdown: ``never``, ``any_significant`` or ``all_significant``.

    Raises:
        SpecError: If a field is invalid.
    """

    strategy: Strategy = "one_for_one"
    intensity: int = 1
    period: float = 5.0
    auto_shutdown: AutoShutdown = "never"

    def __post_init__(self) -> None:
        where = "supervisor flags"
        _one_of(where, "strategy", self.strategy, STRATEGIES)
        if not isinstance(self.intensity, int) or isinstance(self.intensity, bool) or (
            self.intensity < 0
        ):
            raise SpecError(f"{where}: intensity must be an int >= 0; got {self.intensity!r}")
        if not _is_number(self.period) or not math.isfinite(self.period) or self.period <= 0:
            raise SpecError(f"{where}: period must be seconds > 0; got {self.period!r}")
        _one_of(where, "auto_shutdown", self.auto_shutdown, AUTO_SHUTDOWNS)


def check_specs(children: Iterable[ChildSpec], flags: SupFlags | None = None) -> None:
    """Check a list of child specs as a whole, without starting anything.

    Args:
        children: The specs, in start order.
        flags: The supervisor's flags, to check significant children against auto_shutdown.

    Raises:
        SpecError: On a non-ChildSpec item, a duplicate id, or a significant child under a
            supervisor whose ``auto_shutdown`` is ``never``.
    """
    seen: set[str] = set()
    for spec in children:
        if not isinstance(spec, ChildSpec):
            raise SpecError(f"children must be ChildSpec instances; got {spec!r}")
        if spec.id in seen:
            raise SpecError(f"duplicate child id {spec.id!r}")
        seen.add(spec.id)
        if flags is not None and spec.significant and flags.auto_shutdown == "never":
            raise SpecError(
                f"child spec {spec.id!r}: significant children need auto_shutdown "
                "any_significant or all_significant (the supervisor's is never)"
            )
