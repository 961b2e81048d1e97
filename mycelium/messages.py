"""Every message exchanged between the mesh's actors.

Messages are data (STYLE §7): frozen, slotted dataclasses that never carry a mutable object
another actor keeps. The same messages cross the control socket, so each one serialises to a
plain dict with :func:`to_wire` and comes back with :func:`from_wire` (a registry by class name).
That is what lets ``mycelium repl`` tell or ask any actor anything by name.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from mycelium.defaults import DeployDefaults

__all__ = [
    "AgentSync",
    "AppFailed",
    "AppRestarted",
    "AppRoute",
    "Budget",
    "ClaimSlot",
    "Crash",
    "CrashRequested",
    "DeregisterEndpoint",
    "Drain",
    "EndpointInfo",
    "EndpointsChanged",
    "FabricRestarted",
    "GetInfo",
    "GetPlans",
    "GetStatus",
    "InstanceInfo",
    "InstanceStatus",
    "Plan",
    "PlanChanged",
    "PlansSynced",
    "PublishPlan",
    "RegisterEndpoint",
    "ReleaseSlot",
    "Resync",
    "RolloutFailed",
    "SetBudget",
    "SlotDeclined",
    "SlotReply",
    "StopApp",
    "SyncRequest",
    "Tick",
    "from_wire",
    "message_types",
    "to_wire",
]


class CrashRequested(Exception):
    """Raised by an actor that received :class:`Crash`: a failure on purpose (SPEC §8)."""

    reason = "crash requested"


# --------------------------------------------------------------------------- shared records


@dataclass(frozen=True, slots=True)
class Budget:
    """What one app may use: instances over the mesh, cpu cores and MB per instance."""

    app: str
    max_instances: int
    cpu: float
    mem: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What should run: one digest of one app, ``min``..``max`` instances.

    ``generation`` grows with every publish so that agents can tell a new deploy of the same
    digest from a re-sync. ``previous`` is the digest a failed update rolls back to;
    ``status`` is ``active`` or ``failed`` (with ``reason``).
    """

    app: str
    digest: str
    min: int
    max: int
    warmup: float
    timeout: float
    generation: int = 0
    published_at: float = 0.0
    previous: str | None = None
    status: str = "active"
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """A snapshot of one AppInstance, as the fabric and ``status`` see it."""

    id: str
    app: str
    node: str
    digest: str
    state: str
    child: str
    pid: int | None = None
    url: str | None = None
    restarts: int = 0
    started_at: float = 0.0
    ready_at: float | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """One Ready instance the edge may send requests to."""

    url: str
    instance: str


@dataclass(frozen=True, slots=True)
class AppRoute:
    """The Ready endpoints of one planned app (empty → the edge answers 503)."""

    app: str
    endpoints: tuple[EndpointInfo, ...] = ()


# --------------------------------------------------------------------------- any actor


@dataclass(frozen=True, slots=True)
class Crash:
    """Makes any mesh actor fail on purpose, so its supervisor's reaction can be watched."""


@dataclass(frozen=True, slots=True)
class GetInfo:
    """Ask any mesh actor for a small JSON-able description of itself."""


@dataclass(frozen=True, slots=True)
class Tick:
    """A timer firing inside an actor (``kind`` says which)."""

    kind: str = ""


# --------------------------------------------------------------------------- to the fabric


@dataclass(frozen=True, slots=True)
class SetBudget:
    """Set an app's budget (validated by the fabric; refused with a precise reason)."""

    app: str
    max_instances: int
    cpu: float
    mem: int


@dataclass(frozen=True, slots=True)
class PublishPlan:
    """Publish a plan: run ``digest`` of ``app`` (a new digest of a running app is blue/green)."""

    app: str
    digest: str
    min: int = DeployDefaults.MIN
    max: int = DeployDefaults.MAX
    warmup: float = 0.0
    timeout: float = DeployDefaults.TIMEOUT
    budget: SetBudget | None = None
    """Optionally the app's budget, written in the same transaction as the plan (one fsync)."""


@dataclass(frozen=True, slots=True)
class StopApp:
    """Remove the app's plan: its instances drain and stop, nothing respawns."""

    app: str


@dataclass(frozen=True, slots=True)
class ClaimSlot:
    """An agent asks for the right to run ``app`` on ``node`` (answered with :class:`SlotReply`)."""

    app: str
    node: str


@dataclass(frozen=True, slots=True)
class SlotReply:
    """The fabric's answer to :class:`ClaimSlot`."""

    granted: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ReleaseSlot:
    """An agent no longer runs ``app`` on ``node``."""

    app: str
    node: str


@dataclass(frozen=True, slots=True)
class SlotDeclined:
    """An agent cannot fit ``app`` on ``node`` (counts against ``desired``)."""

    app: str
    node: str
    reason: str


@dataclass(frozen=True, slots=True)
class RegisterEndpoint:
    """An instance became Ready: its endpoint joins the edge's routes."""

    instance: InstanceInfo


@dataclass(frozen=True, slots=True)
class DeregisterEndpoint:
    """An instance leaves the routes (draining, exited, failed); ``instance`` is its last state."""

    instance: InstanceInfo


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """Any other state change of an instance (Launching, Stopped, samples)."""

    instance: InstanceInfo


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """The edge or an agent (re)started: send me everything I should know."""

    requester: str


@dataclass(frozen=True, slots=True)
class AgentSync:
    """An agent tells a (re)started fabric which apps hold a slot on its node."""

    node: str
    apps: tuple[str, ...]
    instances: tuple[InstanceInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class AppFailed:
    """An app supervisor on a node gave up (its restart intensity was reached)."""

    app: str
    reason: str


@dataclass(frozen=True, slots=True)
class AppRestarted:
    """The node's ``apps`` supervisor restarted an app supervisor (the agent re-adopts it)."""

    app: str


@dataclass(frozen=True, slots=True)
class RolloutFailed:
    """An agent gave up on ``digest``: the fabric rolls the plan back and marks it failed."""

    app: str
    digest: str
    node: str
    reason: str


@dataclass(frozen=True, slots=True)
class GetStatus:
    """Ask the fabric for SPEC §6's status document (optionally one app)."""

    app: str | None = None


@dataclass(frozen=True, slots=True)
class GetPlans:
    """Ask the fabric for every plan and budget."""


# --------------------------------------------------------------------------- from the fabric


@dataclass(frozen=True, slots=True)
class EndpointsChanged:
    """The fabric pushes the whole routing table to the edge (it never asks per request)."""

    routes: tuple[AppRoute, ...]
    restarts: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PlanChanged:
    """The fabric tells agents an app's plan (``plan`` None: the app was stopped)."""

    app: str
    plan: Plan | None
    budget: Budget | None


@dataclass(frozen=True, slots=True)
class PlansSynced:
    """Ends a re-sync: these are all the planned apps; an agent drops any other it still runs."""

    apps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FabricRestarted:
    """A restarted fabric asks agents to re-sync (AgentSync + instance reports)."""


# --------------------------------------------------------------------------- to instances


@dataclass(frozen=True, slots=True)
class Resync:
    """Report your current state again (to the fabric and your agent)."""


@dataclass(frozen=True, slots=True)
class Drain:
    """Leave the routes now and go Draining; termination follows from the supervisor."""


# --------------------------------------------------------------------------- wire format

_REGISTRY: dict[str, type[Any]] = {}
_HINTS: dict[str, dict[str, Any]] = {}


def _register() -> None:
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and dataclasses.is_dataclass(obj):
            _REGISTRY[name] = obj


def message_types() -> dict[str, type[Any]]:
    """Every message class by name (what ``msg`` offers in the REPL)."""
    return dict(_REGISTRY)


def to_wire(obj: Any) -> Any:
    """A message as plain JSON-able data: ``{"type": "PublishPlan", ...fields}``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {"type": type(obj).__name__}
        for f in dataclasses.fields(obj):
            out[f.name] = to_wire(getattr(obj, f.name))
        return out
    if isinstance(obj, tuple | list):
        return [to_wire(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    return obj


def _type_hints(cls: type[Any]) -> dict[str, Any]:
    """A message class's resolved field types (resolving them on every decode is slow)."""
    hints = _HINTS.get(cls.__name__)
    if hints is None:
        hints = _HINTS[cls.__name__] = typing.get_type_hints(cls)
    return hints


def from_wire(data: Any) -> Any:
    """The inverse of :func:`to_wire`.

    Raises:
        ValueError: unknown message type or fields that do not fit it.
    """
    if isinstance(data, dict) and "type" in data:
        cls = _REGISTRY.get(str(data["type"]))
        if cls is None:
            raise ValueError(f"unknown message type {data['type']!r}")
        hints = _type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = from_wire(data[f.name])
            if isinstance(value, list) and "tuple" in str(hints.get(f.name, "")):
                value = tuple(value)
            kwargs[f.name] = value
        unknown = set(data) - {"type"} - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{data['type']}: unknown fields {sorted(unknown)}")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"{data['type']}: {exc}") from exc
    if isinstance(data, list):
        return [from_wire(x) for x in data]
    return data


_register()
