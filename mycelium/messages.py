"""Every message exchanged between the mesh's actors.

Messages are data: frozen, slotted dataclasses that never carry a mutable object
another actor keeps. The same messages cross the control socket, so each one serialises to a
plain dict with :func:`to_wire` and comes back, checked field by field against its annotations,
with :func:`from_wire` (the codec lives in :mod:`mycelium.wire`; every class here is
registered with it). That is what lets ``mycelium repl`` tell or ask an actor by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mycelium.defaults import DeployDefaults
from mycelium.messages_scale import AppLoad, DrainNode, EdgeLoad, NodeCapacity, WakeApp
from mycelium.rollout_messages import EdgeAnswers  # and registers the rollout messages
from mycelium.states import InstanceState, PlanStatus
from mycelium.wire import WireError, decode_message, from_wire, message_types, register, to_wire

__all__ = [
    "REPORTS", "AgentSync", "AppFailed", "AppLoad", "AppRestarted", "AppRoute", "Budget",
    "CheckReport", "CheckResult", "ClaimSlot", "ClaimSwitch", "Crash", "CrashRequested",
    "DeregisterEndpoint", "Drain", "DrainNode", "EdgeLoad", "EndpointInfo", "EndpointsChanged",
    "FabricRestarted", "GetInfo", "GetPlans", "GetStatus", "InstanceInfo", "InstanceStatus",
    "IsRouted", "KillEdgeWorker", "LastExit", "NodeCapacity", "Plan", "PlanChanged",
    "PlanVersion", "PlansSynced", "PublishBatch", "PublishPlan", "RegisterEndpoint",
    "ReleaseSlot", "ReleaseSwitch", "ReloadCerts", "Resync", "RolloutFailed", "SecretsChanged",
    "SetBudget", "SlotDeclined", "SlotReply", "StopApp", "SwitchFreed", "SyncRequest", "Tick",
    "WakeApp",
    "WireError", "decode_message", "from_wire", "message_types", "to_wire",
]


class CrashRequested(Exception):
    """Raised by an actor told :class:`Crash`: a failure on purpose (to watch a supervisor)."""

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

    ``generation`` grows with every publish (agents tell a new deploy from a re-sync);
    ``previous`` is what a failed update rolls back to; ``status``: active or failed (reason).
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
    status: PlanStatus = PlanStatus.ACTIVE
    reason: str | None = None
    canary_nodes: tuple[str, ...] = ()  # nodes running a canary beside blue (none: promoted)
    canary_weight: int = 0  # percent of requests for the canaries (0: their share by count)
    auto_promote: float = 0.0  # seconds of passing checks before promoting itself (0: never)
    secrets: int = 0  # counts secret changes: a new count rolls the same digest out
    env_secrets: tuple[str, ...] = ()  # secret names also given as env vars (never values)
    hosts: tuple[str, ...] = ()
    """Host names routed to the app with the path unchanged (exact or ``*.suffix``)."""
    idle: float | None = None
    """With ``min`` 0: seconds without a request after which the last instance stops."""
    target_concurrency: float | None = None
    """Autoscaling: concurrent requests one instance should serve (None: a fixed count)."""


@dataclass(frozen=True, slots=True)
class LastExit:
    """How an instance ended: ``status`` shows it on the replacement as ``last_exit``."""

    instance: str
    reason: str
    at: str  # RFC 3339
    output_tail: tuple[str, ...] = ()  # its last <= 10 lines of stderr (else stdout)

    def to_doc(self) -> dict[str, Any]:
        """The ``last_exit`` object of ``status --json``."""
        return {"instance": self.instance, "reason": self.reason, "at": self.at,
                "output_tail": list(self.output_tail)}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One health check's outcome (``last_check`` in ``status``): ``at`` is epoch seconds."""

    check: str
    ok: bool
    at: float
    detail: str


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What an instance's health checks say now: the check engine's message to its instance.

    Carries the whole truth with a sequence number (a report overtaken by a later one is
    dropped). ``failure`` is a reason to stop the instance (a liveness failure, a watchdog
    timeout, a startup check that failed or ran out of time); once set it stays set.
    """

    seq: int
    ready: bool
    serving: bool
    last: CheckResult | None
    status_text: str | None
    failure: str | None


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """A snapshot of one AppInstance, as the fabric and ``status`` see it."""

    id: str
    app: str
    node: str
    digest: str
    state: InstanceState
    child: str
    pid: int | None = None
    url: str | None = None
    restarts: int = 0
    started_at: float = 0.0
    ready_at: float | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    reason: str | None = None
    #: How the instance this one replaced ended (on a dead instance: its own end).
    last_exit: LastExit | None = None
    serving: bool = True  # False: Ready but a readiness check fails (out of the routes)
    last_check: CheckResult | None = None
    status_text: str | None = None  # the workload's last sd_notify STATUS=
    uid: int | None = None  # the workload's uid (None: not isolated, the mesh's own)
    limits: str | None = None  # "cgroup" or "sampled": how its budget is enforced
    dir: str | None = None  # its private working directory


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """One Ready instance the edge may send requests to (a canary's: digest and SWRR weight)."""

    url: str
    instance: str
    digest: str = ""
    weight: int = 0


@dataclass(frozen=True, slots=True)
class AppRoute:
    """The Ready endpoints of one planned app (empty → the edge answers 503)."""

    app: str
    endpoints: tuple[EndpointInfo, ...] = ()
    hosts: tuple[str, ...] = ()
    hold: bool = False
    """Scaled to zero: with no endpoint the edge holds a request while an instance starts."""


# --------------------------------------------------------------------------- any actor


@dataclass(frozen=True, slots=True)
class Crash:
    """Makes any mesh actor fail on purpose, so its supervisor's reaction can be watched."""


@dataclass(frozen=True, slots=True)
class KillEdgeWorker:
    """Crash test: signal one edge worker (``mycelium kill --edge``); answers its pid or None."""

    signal: int = 9


@dataclass(frozen=True, slots=True)
class ReloadCerts:
    """Re-read the edge's TLS certificates (``mycelium reload-certs``, SIGHUP to ``up``);
    answers None when done, or the one-line reason the old certificates stay in use."""


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
    canary: int = 0  # instances of ``digest`` beside the old digest until promoted (0: none)
    canary_weight: int = 0  # percent of requests for the canaries (0: their share by count)
    auto_promote: float = 0.0  # seconds of passing checks before promoting itself (0: never)
    who: str = ""  # ``user@host`` that asked, and the spore's version: for the history
    version: str = ""
    env_secrets: tuple[str, ...] = ()  # an apply file's: secret names also given as env vars
    hosts: tuple[str, ...] | None = None
    """The app's host names; ``None`` keeps the ones it has, ``()`` clears them."""
    idle: float | None = None  # scale to zero and autoscaling: see Plan
    target_concurrency: float | None = None


@dataclass(frozen=True, slots=True)
class StopApp:
    """Remove the app's plan: its instances drain and stop, nothing respawns."""

    app: str


@dataclass(frozen=True, slots=True)
class PlanVersion:
    """The generation of an app's plan that a batch was computed against (0: no plan)."""

    app: str
    generation: int


@dataclass(frozen=True, slots=True)
class PublishBatch:
    """Publish several plans and remove several, all or nothing (``mycelium apply``).

    Refused as a whole, with nothing changed, if any app in ``expect`` no longer has the
    plan generation it names (like Nomad's check-index): the batch was computed against a
    view of the mesh that another deploy or apply changed meanwhile.
    """

    plans: tuple[PublishPlan, ...] = ()
    stops: tuple[str, ...] = ()
    expect: tuple[PlanVersion, ...] = ()


@dataclass(frozen=True, slots=True)
class SecretsChanged:
    """The app's secrets changed: roll it out (agents open the values when they spawn)."""

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
    """Ask the fabric for the ``status --json`` document (optionally one app)."""

    app: str | None = None


@dataclass(frozen=True, slots=True)
class GetPlans:
    """Ask the fabric for every plan and budget."""


@dataclass(frozen=True, slots=True)
class ClaimSwitch:
    """Ask the fabric whether ``node`` may start switching ``app`` (answer: bool).

    Blue/green's bounded parallelism: see :class:`mycelium.fabric.switch.SwitchGate`.
    """

    app: str
    node: str
    lease: float = 120.0


@dataclass(frozen=True, slots=True)
class ReleaseSwitch:
    """``node`` finished switching ``app`` (its blue left the routes) or dropped the app."""

    app: str
    node: str


@dataclass(frozen=True, slots=True)
class SwitchFreed:
    """To a node the fabric refused a switch of ``app``: a holder released it, claim again now
    (rather than at the node's next retry)."""

    app: str


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
    count: int = 1
    """How many instances of the app this node runs (the fabric's placement)."""


@dataclass(frozen=True, slots=True)
class PlansSynced:
    """Ends a re-sync: these are all the planned apps; an agent drops any other it still runs."""

    apps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FabricRestarted:
    """A restarted fabric asks agents to re-sync (AgentSync + instance reports)."""


# --------------------------------------------------------------------------- to the edge


@dataclass(frozen=True, slots=True)
class IsRouted:
    """Ask the edge whether its applied routing table still holds ``url`` (answer: bool).

    A draining instance waits for ``False`` before its in-flight requests get their grace.
    """

    url: str


# --------------------------------------------------------------------------- to instances


@dataclass(frozen=True, slots=True)
class Resync:
    """Report your current state again (to the fabric and your agent)."""


@dataclass(frozen=True, slots=True)
class Drain:
    """Leave the routes now and go Draining; termination follows from the supervisor."""


# --------------------------------------------------------------------------- wire form

REPORTS: frozenset[type[Any]] = frozenset({
    AgentSync, CheckReport, DeregisterEndpoint, EdgeAnswers, EdgeLoad, EndpointsChanged,
    InstanceStatus, NodeCapacity, PlanChanged, PlansSynced, RegisterEndpoint, ReleaseSlot,
})
"""Messages that state what exists — an instance's endpoint and state, an agent's apps and
slots, what its health checks saw, what the edge answered per digest (a forged count would
revert a canary), the fabric's plans and routing table pushed to agents and the edge — which
only the mesh's own actors may send. Told from outside, even a well-typed one is a lie the
mesh acts on (a forged ``RegisterEndpoint`` routes users to a dead port), so the control
socket refuses them. Requests, queries, commands and events the mesh then acts on itself
(``ClaimSwitch``, ``IsRouted``, ``RolloutFailed``, ``Crash`` …) stay open to the REPL."""

# Every class above is on the wire: the control socket, etcd and the fabric's store carry them.
# Private messages an actor sends itself (``_Spawned`` in the instance …) and the supervisors'
# own stay off it: they carry live objects (a workload handle, child specs, actor refs).
register(*(globals()[name] for name in __all__ if isinstance(globals()[name], type)
           and dataclasses.is_dataclass(globals()[name])))
