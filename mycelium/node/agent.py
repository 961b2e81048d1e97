"""The node agent: follows plans, claims slots, starts app supervisors, drives rollouts.

One agent per node (Flows B and D). It is a sibling of the node's ``apps`` supervisor, not its
parent, so a crashed agent takes no workload with it: the restarted agent adopts the running
app supervisors (their child ids and meta say which app and digest they run) and asks their
instances to report again. Decisions are pure (:func:`mycelium.node.rollout.step`); the agent
only applies them (:mod:`.placement` says whether an app fits), and anything slow (draining and
stopping an instance or an app) runs on the stop pool of :mod:`.drain` and reports back by
message.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pykka

from mycelium._logger import get_logger
from mycelium.fabric.names import Names
from mycelium.fabric.switch import ClaimSwitch, ReleaseSwitch, SwitchFreed
from mycelium.messages import (
    AppFailed,
    AppRestarted,
    Budget,
    ClaimSlot,
    Crash,
    CrashRequested,
    FabricRestarted,
    GetInfo,
    InstanceInfo,
    InstanceStatus,
    NodeCapacity,
    Plan,
    PlanChanged,
    PlansSynced,
    ReleaseSlot,
    RolloutFailed,
    SlotDeclined,
    SlotReply,
    SyncRequest,
)
from mycelium.states import InstanceState, PlanStatus
from supervisors import (
    ChildSpec,
    SupervisedActor,
    Supervisor,
    SupervisorError,
    SupFlags,
    start_child,
    which_children,
)
from supervisors.reports import Reporter
from supervisors.timers import TimerHandle, shared_timers

from .adoption import adopt_children, resync_all, tell_quietly, teller
from .agent_self import SETTLE_GAP, AnswerDue, AppGone, ChildGone, Settle, Wake
from .drain import STOPS, remove_app, stop_instance
from .instance import AppInstance, InstanceSpec
from .output import OutputPolicy, read_last_exit
from .placement import decline_reason, default_budget, usage
from .resync import ANSWER_WAIT, SyncAnswer
from .rollout import ChildView, Fail, Start, Stop, WakeAt, is_green, switched
from .serials import next_serial
from .settings import NodeSettings, SporeInfo, backoff_intensity
from .units import unit_actions, unit_child

__all__ = ["Agent", "NodeSettings", "SporeInfo"]

log = get_logger(__name__)

_SWITCH_RETRY = 0.1
"""Seconds before a node that may not switch yet (``[rollout] parallel``) asks again."""

_STOP_RETRY = 0.5
"""Seconds before a stop that failed half-way (the child may still run) is tried again."""


@dataclass(slots=True)
class _AppHere:
    children: dict[str, ChildView] = field(default_factory=dict)
    infos: dict[str, InstanceInfo] = field(default_factory=dict)
    stopping: set[str] = field(default_factory=set)
    units: dict[str, int] = field(default_factory=dict)  # child → which of the node's instances
    removing: bool = False
    switching: bool = False
    cpu: float = 0.0
    mem: int = 0
    wake: TimerHandle | None = None
    failed: tuple[int, str] | None = None  # (plan generation, digest) reported failed here
    settling: bool = False  # a Settle is on its way
    settled_at: float = -1.0  # monotonic time of the last Settle


class Agent(SupervisedActor):
    """The agent of one node (registered under the node's name, e.g. ``node-1``).

    Args:
        node: The node's name.
        names: The mesh's registered names.
        settings: Capacity and timings.
        spore_info: Verifies a digest's spore and returns its path and manifest facts.
        extract: Extracts a verified spore into an instance's directory, returns the binary.
        instances_dir: The home's instances directory.
        reporter: Receives the app supervisors' reports.
        secrets: Opens an app's secrets when an instance starts (None: instances get none).
    """

    def __init__(self, node: str, names: Names, settings: NodeSettings,
                 spore_info: Callable[[str], SporeInfo], extract: Callable[[Any, Any], Any],
                 instances_dir: Any, reporter: Reporter | None, *,
                 secrets: Callable[[str], Mapping[str, bytes]] | None = None) -> None:
        super().__init__()
        self._secrets = secrets
        self.node = node
        self._names = names
        self._settings = settings
        self._spore_info = spore_info
        self._extract = extract
        self._instances_dir = instances_dir
        self._reporter = reporter
        self._plans: dict[str, Plan] = {}
        self._budgets: dict[str, Budget] = {}
        self._apps: dict[str, _AppHere] = {}
        self._manifests: dict[str, SporeInfo] = {}
        self._counts: dict[str, int] = {}  # app → instances the fabric placed here
        self._capacity = NodeCapacity(node, settings.cpu, settings.mem_mb)  # told the fabric
        self._answer = SyncAnswer(node, lambda m: names.tell("fabric", m))

    # -- lifecycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        """Adopt the app supervisors already running on this node, then sync with the fabric."""
        self._names.register(self.node, self.actor_ref)
        self._adopt()
        self._names.tell("fabric", self._capacity)
        self._names.tell("fabric", SyncRequest(self.node))

    def on_stop(self) -> None:
        """Unregister (the apps keep running under the node's ``apps`` supervisor)."""
        self._names.unregister(self.node, self.actor_ref)

    def on_failure(self, *_exc: object) -> None:
        """Unregister; the successor adopts the apps."""
        self._names.unregister(self.node, self.actor_ref)

    def _apps_ref(self) -> pykka.ActorRef[Any]:
        ref = self._names.get(f"{self.node}/apps")
        if ref is None:
            raise SupervisorError(f"{self.node}: the apps supervisor is not running")
        return ref

    def _adopt(self) -> None:
        apps_ref = self._names.get(f"{self.node}/apps")
        if apps_ref is None:
            return
        for app_child in which_children(apps_ref):
            app = str(app_child.meta.get("app", app_child.id))
            here = self._apps.setdefault(app, _AppHere())
            here.cpu = float(app_child.meta.get("cpu", 0.0))
            here.mem = int(app_child.meta.get("mem", 0))
            if app_child.ref is not None:
                adopt_children(here.children, here.units, app_child.ref)

    def _readopt(self, app: str, here: _AppHere) -> None:
        app_sup = self._app_sup(app)
        if app_sup is not None:
            adopt_children(here.children, here.units, app_sup)

    # -- dispatch --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Dispatch one message.

        Raises:
            CrashRequested: on :class:`Crash`.
        """
        match message:
            case PlanChanged(app=app, plan=plan, budget=budget, count=count):
                if plan is None or count < 1:
                    self._plans.pop(app, None)
                    self._counts.pop(app, None)
                    self._remove_app(app)
                else:
                    self._plans[app] = plan
                    self._counts[app] = count
                    if budget is not None:
                        self._budgets[app] = budget
                    self._reconcile(app)
            case PlansSynced(apps=apps):
                for app in [a for a in self._apps if a not in apps]:
                    self._plans.pop(app, None)
                    self._counts.pop(app, None)
                    self._remove_app(app)  # stopped while this agent was down
            case InstanceStatus(instance=info):
                self._instance(info)
            case Settle(app=app):
                if app in self._apps and self._apps[app].settling:
                    self._apps[app].settling = False
                    self._apps[app].settled_at = time.monotonic()
                    self._reconcile(app)
            case Wake(app=app) | SwitchFreed(app=app):  # a timer; a switch to claim now
                if app in self._apps:
                    self._apps[app].wake = None
                    self._reconcile(app)
            case ChildGone(app=app, child=child, gone=gone):
                here = self._apps.get(app)
                if here is not None:
                    here.stopping.discard(child)
                    if gone:
                        here.children.pop(child, None)
                        here.infos.pop(child, None)
                        here.units.pop(child, None)
                        self._reconcile(app)
                    else:  # it may still run: the next reconcile stops it again
                        self._wake_at(app, here, time.time() + _STOP_RETRY)
            case AppGone(app=app):
                self._apps.pop(app, None)
                self._names.tell("fabric", ReleaseSwitch(app, self.node))
                self._names.tell("fabric", ReleaseSlot(app, self.node))
                # capacity was freed: plans this node declined or lost may fit now
                for other in [a for a in self._plans if a not in self._apps]:
                    self._reconcile(other)
            case AppFailed(app=app, reason=reason):
                here = self._apps.get(app)
                if here is not None and not here.removing:
                    log.warning("%s: %s gave up (%s); apps restarts it", self.node, app, reason)
                    here.children.clear()
                    here.infos.clear()
                    here.stopping.clear()
            case AppRestarted(app=app):
                here = self._apps.get(app)
                if here is not None and not here.removing:
                    self._readopt(app, here)
                    self._reconcile(app)
            case FabricRestarted():
                for app, here in self._apps.items():  # a new fabric knows no switch holders
                    plan = self._plans.get(app)
                    if here.switching and plan is not None:
                        self._names.tell("fabric", ClaimSwitch(app, self.node, self._lease(plan)))
                self._names.tell("fabric", self._capacity)
                apps_ref = self._names.get(f"{self.node}/apps")
                if apps_ref is not None:  # the new fabric hears every instance from itself
                    resync_all(apps_ref)
                if not self._answer.owe(self._apps):  # not every instance has reported
                    shared_timers().call_later(ANSWER_WAIT, teller(self.actor_ref, AnswerDue()))
            case AnswerDue():
                self._answer.answer(self._apps, force=True)
            case GetInfo():
                return {"name": self.node, "apps": sorted(self._apps),
                        "used": dataclasses.asdict(self._usage()),
                        "capacity": {"cpu": self._settings.cpu, "mem": self._settings.mem_mb}}
            case Crash():
                raise CrashRequested("crash requested")
        return None

    # -- instances -------------------------------------------------------------------------

    def _instance(self, info: InstanceInfo) -> None:
        here = self._apps.get(info.app)
        if here is None or info.child not in here.children:
            return
        view = here.children[info.child]
        here.children[info.child] = dataclasses.replace(view, state=info.state,
                                                        ready_at=info.ready_at)
        here.infos[info.child] = info
        self._answer.answer(self._apps)  # the last report a restarted fabric waits for
        if info.state != view.state and not here.settling:  # once per burst of reports
            here.settling = True
            wait = here.settled_at + SETTLE_GAP - time.monotonic()
            if wait > 0:  # reports keep coming: at most every SETTLE_GAP
                shared_timers().call_later(wait, teller(self.actor_ref, Settle(info.app)))
            else:
                self.actor_ref.tell(Settle(info.app))

    # -- placement and rollout -------------------------------------------------------------

    def _usage(self, besides: str | None = None) -> Any:
        """What the apps here reserve: each app's budget times its instances (the intensity
        of an app supervisor is multiplied alike: each instance may restart as one would)."""
        return usage((h.cpu * self._counts.get(a, 1), h.mem * self._counts.get(a, 1))
                     for a, h in self._apps.items() if a != besides)

    def _reconcile(self, app: str) -> None:
        plan = self._plans.get(app)
        if plan is None:
            return
        here = self._apps.get(app)
        if here is None:
            self._place(app, plan)
            return
        if here.removing:
            return
        views = [v for c, v in here.children.items() if c not in here.stopping]
        actions = unit_actions(plan, here.children, here.stopping, here.units,
                               self._counts.get(app, 1), time.time(),
                               failed=here.failed == (plan.generation, plan.digest),
                               node=self.node)
        if (plan.status != PlanStatus.FAILED and any(isinstance(a, Start) for _, a in actions)
                and self.node not in plan.canary_nodes  # the fabric chose the canaries
                and any(not is_green(plan, v) for v in views)
                and not self._may_switch(app, here, plan)):
            # another node is switching this app: keep serving blue, ask again shortly
            actions = [a for a in actions if not isinstance(a[1], (Start, WakeAt))]
            actions.append((0, WakeAt(time.time() + _SWITCH_RETRY)))
        for unit, action in actions:
            match action:
                case Start(digest=digest):
                    self._start_child(app, here, digest, plan, unit)
                case Stop(child=child):
                    self._stop_child(app, here, child)
                case Fail(digest=digest, reason=reason):
                    here.failed = (plan.generation, digest)
                    self._names.tell("fabric", RolloutFailed(app, digest, self.node, reason))
                case WakeAt(when=when):
                    self._wake_at(app, here, when)
        if here.switching and switched(plan, here.children, here.stopping):
            here.switching = False  # every blue left the routes: the next node may switch
            self._names.tell("fabric", ReleaseSwitch(app, self.node))

    def _wake_at(self, app: str, here: _AppHere, when: float) -> None:
        if here.wake is not None:
            shared_timers().cancel(here.wake)
        here.wake = shared_timers().call_later(when - time.time() + 0.001,
                                               teller(self.actor_ref, Wake(app)))

    def _lease(self, plan: Plan) -> float:
        """How long the fabric keeps this node's switch if the node never releases it."""
        return plan.timeout + plan.warmup + 2 * self._settings.stop_grace + 30.0

    def _may_switch(self, app: str, here: _AppHere, plan: Plan) -> bool:
        """Whether this node may start a green beside its blue now (``[rollout] parallel``).

        A restarting fabric (not registered) means ask again shortly; a fabric that fails to
        answer (one without switch bookkeeping, or a timeout) does not block an update: the node
        switches, as it would with no bound.
        """
        if here.switching:
            return True
        fabric = self._names.get("fabric")
        if fabric is None:
            return False
        try:
            granted = fabric.ask(ClaimSwitch(app, self.node, self._lease(plan)),
                                                   timeout=2.0) is not False
        except Exception as exc:
            log.info("%s: switch claim for %s unanswered (%s); switching", self.node, app, exc)
            granted = True
        here.switching = granted
        return granted

    def _place(self, app: str, plan: Plan) -> None:
        budget = self._budgets.get(app) or default_budget(plan)
        count = self._counts.get(app, 1)
        declined = decline_reason(self._usage(besides=app), dataclasses.replace(
            budget, cpu=budget.cpu * count, mem=budget.mem * count),
            self._settings.cpu, self._settings.mem_mb)
        if declined is not None:
            self._names.tell("fabric", SlotDeclined(app, self.node, declined))
            return
        fabric = self._names.get("fabric")
        if fabric is None:
            return
        try:
            reply = fabric.ask(ClaimSlot(app, self.node), timeout=5.0)
        except Exception as exc:
            log.warning("%s: claiming a slot for %s failed: %s", self.node, app, exc)
            return
        if not isinstance(reply, SlotReply) or not reply.granted:
            return
        here = _AppHere(cpu=budget.cpu, mem=budget.mem)
        spec = self._instance_spec(app, plan.digest, plan, budget, 0)
        if spec is None:
            self._names.tell("fabric", ReleaseSlot(app, self.node))
            return
        names, reporter, node, s = self._names, self._reporter, self.node, self._settings

        def start_app() -> pykka.ActorRef[Any]:
            # empty: its instance is started by the agent, so an app supervisor that `apps`
            # restarts (it reached its intensity) resumes the current plan's digest on the
            # agent's next reconcile, never the digest it was first placed with
            return Supervisor.start(
                SupFlags("one_for_one", intensity=backoff_intensity(s) * count, period=s.period),
                [], path=f"mesh/nodes/{node}/apps/{app}", reporter=reporter)

        try:
            start_child(self._apps_ref(), ChildSpec(
                id=app, start=start_app, type="supervisor",
                meta={"app": app, "cpu": budget.cpu, "mem": budget.mem}))
        except Exception as exc:
            log.warning("%s: starting %s failed: %s", node, app, exc)
            names.tell("fabric", ReleaseSlot(app, node))
            return
        self._apps[app] = here
        self._start_instance(app, here, spec, 0, plan.secrets)
        self._reconcile(app)  # the node's other instances of the app

    def _instance_spec(self, app: str, digest: str, plan: Plan,
                       budget: Budget | None, unit: int) -> InstanceSpec | None:
        try:
            info = self._manifests.get(digest) or self._spore_info(digest)
        except Exception as exc:
            log.warning("%s: spore %s of %s unusable: %s", self.node, digest[:12], app, exc)
            self._names.tell("fabric", RolloutFailed(app, digest, self.node, str(exc)))
            return None
        self._manifests[digest] = info
        s = self._settings
        # a new secrets count is a new child beside the old one (blue/green of one digest)
        child = unit_child(app, self.node, unit, digest) + (
            f"~s{plan.secrets}" if plan.secrets else "")
        return InstanceSpec(
            app=app, node=self.node, digest=digest, child=child,
            spore=info.path, extract=self._extract, args=info.args, env=info.env,
            health=info.health, mem_mb=(budget.mem if budget else 256),
            startup_timeout=min(plan.timeout, s.startup_deadline), probe_interval=s.probe_interval,
            health_interval=s.health_interval, health_timeout=s.health_timeout,
            health_failures=s.health_failures, cpu=budget.cpu if budget else None,
            sample_interval=s.sample_interval, stop_grace=s.stop_grace, host=s.host,
            instances_dir=self._instances_dir, isolation=s.isolation, secrets=self._secrets,
            env_secrets=tuple(dict.fromkeys((*info.env_secrets, *plan.env_secrets))),
            output=OutputPolicy(max_bytes=s.output_max_bytes, files=s.output_files,
                                keep=s.output_keep),
            checks=tuple(info.checks), exec_parallel=s.exec_checks_parallel)

    def _child_spec(self, spec: InstanceSpec, unit: int, secrets: int) -> ChildSpec:
        names, counter = self._names, itertools.count()
        previous: list[str] = []  # the slot's last instance: its end is the next one's last_exit

        def start() -> pykka.ActorRef[Any]:
            restarts = next(counter)
            iid = f"{spec.app}@{spec.node}#{next_serial(spec.instances_dir)}"
            last = read_last_exit(spec.instances_dir, previous[0]) if previous else None
            previous[:] = [iid]
            return AppInstance.start(spec, names, iid, restarts, last_exit=last)

        return ChildSpec(id=spec.child, start=start, restart="transient",
                         shutdown=spec.stop_grace + 2.0, backoff=self._settings.backoff,
                         meta={"app": spec.app, "digest": spec.digest, "node": spec.node,
                               "secrets": secrets, "unit": unit})

    def _start_child(self, app: str, here: _AppHere, digest: str, plan: Plan,
                     unit: int) -> None:
        spec = self._instance_spec(app, digest, plan, self._budgets.get(app), unit)
        if spec is not None:
            self._start_instance(app, here, spec, unit, plan.secrets)

    def _start_instance(self, app: str, here: _AppHere, spec: InstanceSpec, unit: int,
                        secrets: int) -> None:
        app_sup = self._app_sup(app)
        if app_sup is None:
            return
        child = self._child_spec(spec, unit, secrets)
        try:
            start_child(app_sup, child)
        except SupervisorError as exc:
            log.warning("%s: starting %s failed: %s", self.node, child.id, exc)
            return
        here.children[child.id] = ChildView(child.id, spec.digest, InstanceState.LAUNCHING,
                                            time.time(), secrets=secrets)
        here.units[child.id] = unit

    def _app_sup(self, app: str) -> pykka.ActorRef[Any] | None:
        for info in which_children(self._apps_ref()):
            if info.id == app:
                return info.ref
        return None

    def _stop_child(self, app: str, here: _AppHere, child: str) -> None:
        here.stopping.add(child)
        info = here.infos.get(child)
        url = info.url if info is not None and info.state == InstanceState.READY else None
        names, app_sup, grace = self._names, self._app_sup(app), self._grace()
        ref = self.actor_ref
        STOPS().submit(lambda: stop_instance(
            names, app_sup, child, url, grace,
            lambda gone: tell_quietly(ref, ChildGone(app, child, gone))))

    def _remove_app(self, app: str) -> None:
        here = self._apps.get(app)
        if here is None or here.removing:
            return
        here.removing = True
        ref, names = self.actor_ref, self._names
        apps_ref = names.get(f"{self.node}/apps")
        app_sup = self._app_sup(app) if apps_ref is not None else None
        urls = [i.url for i in here.infos.values() if i.state == InstanceState.READY and i.url]
        grace = self._grace()
        STOPS().submit(lambda: remove_app(names, apps_ref, app_sup, app, urls, grace,
                                        lambda: tell_quietly(ref, AppGone(app))))

    def _grace(self) -> float:
        """How long a drain waits for requests in flight."""
        return max(self._settings.drain_grace, self._settings.stop_grace)
