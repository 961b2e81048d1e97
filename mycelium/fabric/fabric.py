"""The fabric actor: the control plane of one mesh (Flow B's middle).

It owns budgets, plans and the live instance view; persists plans and budgets in its
:class:`~mycelium.fabric.state.Store`; grants slots through its :class:`SlotClaims`; places
instances through its :class:`ScaleHooks`; pushes :class:`EndpointsChanged` to the edge and
:class:`PlanChanged` to the agents. Its mailbox serialises :class:`ClaimSlot`, so
``max_instances`` is never exceeded. It never asks another actor (only tells), so no ask cycle
can deadlock it. A restarted fabric recovers plans from its store and the rest by re-sync:
every agent, even one that restarted meanwhile, answers :class:`FabricRestarted` with
:class:`AgentSync`. One machine and each member of a mesh of machines run this actor with other
collaborators (store, slots, :class:`~mycelium.fabric.peers.Peers`): see ``start_cluster_fabric``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mycelium._logger import get_logger
from mycelium.messages import (
    AgentSync,
    Budget,
    ClaimSlot,
    Crash,
    CrashRequested,
    DeregisterEndpoint,
    EndpointsChanged,
    FabricRestarted,
    GetInfo,
    GetPlans,
    GetStatus,
    InstanceInfo,
    InstanceStatus,
    Plan,
    PlanChanged,
    PlansSynced,
    PublishBatch,
    PublishPlan,
    RegisterEndpoint,
    ReleaseSlot,
    RolloutFailed,
    SecretsChanged,
    SetBudget,
    SlotDeclined,
    SlotReply,
    StopApp,
    SyncRequest,
    to_wire,
)
from mycelium.states import InstanceState, PlanStatus
from supervisors import SupervisedActor
from supervisors.reports import Reporter
from supervisors.timers import shared_timers

from .batch import PlanMoved, budget_of, check_batch, moved_message, next_plan
from .canary import weighted_routes
from .errors import BadPlan
from .names import Names
from .peers import NoPeers, PeerConnection, PeerEvents, Peers, PeerUpdate, fold_update
from .rollouts import MESSAGES, RolloutPort, Rollouts, reverted, with_next_secrets
from .route_push import PushRoutes, RoutePush, moves_routes
from .scale_hooks import FabricParts, ScaleHooks
from .scaler import DrainBook
from .scaling import SCALE_DOWN_AFTER
from .slots import LocalSlots, SlotClaims
from .state import Store
from .switch import ClaimSwitch, ReleaseSwitch, SwitchBook, Switches, SwitchGate
from .sync_wait import SyncWait
from .validate import check_publish, host_owners
from .view import routes, status_document

__all__ = ["SYNC_GRACE", "Fabric"]

log = get_logger(__name__)

SYNC_GRACE = 2.0
"""Seconds a restarted fabric waits for every agent's AgentSync before granting slots."""


@dataclass(frozen=True, slots=True)
class _SyncDeadline:
    """The re-sync grace of a restarted fabric is over: grant slots even if agents are silent."""


@dataclass(frozen=True, slots=True)
class _FromPeers:
    """Something the peers' watch thread saw (handed to :meth:`Peers.handle` in the mailbox)."""

    message: PeerEvents | PeerConnection


_REPORTS = (RegisterEndpoint, InstanceStatus, DeregisterEndpoint, PushRoutes)


class Fabric(SupervisedActor):
    """The control-plane actor (registered as ``fabric``).

    Args:
        names: The mesh's registered names (to reach ``edge`` and the agents).
        store_factory: Opens the durable store (called in ``on_start``, so a restart reopens it).
        nodes: The node names of this mesh (``node-1`` …).
        digest_known: Whether the repo holds a digest (unknown digests are refused).
        parallel: Nodes that may switch one app's blue/green at a time (``[rollout] parallel``).
        slots: Grants slots (:class:`LocalSlots` by default: one machine).
        peers: The rest of the mesh (:class:`NoPeers` by default: one machine).
        rollouts: History and canaries; switches: who switches what (etcd: mesh-wide).
        many_per_node, drains, report, down_after: see :class:`~.scale_hooks.ScaleHooks`.
    """

    def __init__(self, names: Names, store_factory: Callable[[], Store], nodes: tuple[str, ...],
                 digest_known: Callable[[str], bool] = lambda _d: True, *,
                 parallel: int = 1, slots: SlotClaims | None = None,
                 peers: Peers | None = None, rollouts: Rollouts | None = None,
                 switches: Switches | None = None, many_per_node: bool = True,
                 drains: DrainBook | None = None, report: Reporter | None = None,
                 down_after: float = SCALE_DOWN_AFTER) -> None:
        super().__init__()
        self._names = names
        self._store_factory = store_factory
        self._store: Store | None = None
        self._nodes = nodes
        self._digest_known = digest_known
        self._plans: dict[str, Plan] = {}
        self._budgets: dict[str, Budget] = {}
        self._instances: dict[str, InstanceInfo] = {}
        self._slots: SlotClaims = slots if slots is not None else LocalSlots()
        self._peers: Peers = peers if peers is not None else NoPeers()
        self._declined: dict[str, set[str]] = {}
        self._wait = SyncWait()
        self._generation = 0
        self._restarting: dict[str, dict[str, int]] = {}  # app → node → restarts of a failed slot
        self._switches = SwitchBook(switches if switches is not None else SwitchGate(),
                                    parallel, names.tell)
        self._rollouts = rollouts if rollouts is not None else Rollouts()
        self._push = RoutePush(names, self._endpoints, self._tell_self, lambda: bool(self._wait))
        self._scale = ScaleHooks(FabricParts(
            names, nodes, lambda: self._plans, lambda: self._budgets, self._everything,
            self._tell_self), many_per_node, drains, report, down_after)

    # -- lifecycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        """Recover plans and budgets; if agents already run, this is a restart: re-sync."""
        self._store = self._store_factory()
        stored = self._store.load()
        self._plans, self._budgets = stored.plans, stored.budgets
        self._generation = max((p.generation for p in self._plans.values()), default=0)
        self._names.register("fabric", self.actor_ref)
        live = [n for n in self._nodes if self._names.get(n) is not None]
        if live:
            self._wait.begin(self._nodes)
            for node in live:
                self._names.tell(node, FabricRestarted())
            shared_timers().call_later(SYNC_GRACE, lambda: self._tell_self(_SyncDeadline()))
        self._peers.start(self._plans.values(), lambda m: self._tell_self(_FromPeers(m)))
        self._rollouts.open(RolloutPort(lambda: self._plans, self._everything, self._publish,
                                        self._replace, self._rollout_failed, self._tell_self))
        self._scale.start()

    def on_stop(self) -> None:
        """Stop following the peers and ticking, close the store (a successor starts anew)."""
        self._scale.stop()
        self._peers.stop()
        self._names.unregister("fabric", self.actor_ref)
        self._rollouts.close()
        if self._store is not None:
            self._store.close()
            self._store = None

    def on_failure(self, *_exc: object) -> None:
        """As :meth:`on_stop`."""
        self.on_stop()

    def _tell_self(self, message: Any) -> None:
        if self.actor_ref.is_alive():
            self.actor_ref.tell(message)

    # -- dispatch --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Dispatch one message (``match`` over frozen dataclasses).

        Raises:
            BadPlan: a refused plan or budget (the asker gets it; the fabric keeps running).
            CrashRequested: on :class:`Crash`.
        """
        if not isinstance(message, _REPORTS):
            self._push.flush()  # nobody hears Ready before the edge is told
        match message:
            case RegisterEndpoint(instance=info) | InstanceStatus(instance=info) | \
                    DeregisterEndpoint(instance=info):
                self._instance(info)
            case PushRoutes():
                self._push.due()
            case ClaimSlot(app=app, node=node):
                return self._claim(app, node)
            case _ if self._scale.owns(message):
                return self._scale.handle(message)
            case _FromPeers(message=peer_message):
                self._peer_update(self._peers.handle(peer_message))
            case ReleaseSlot(app=app, node=node):
                self._slots.release(app, node)
                if not self._scale.reassign() and app in self._plans:
                    self._broadcast(app)
            case SlotDeclined(app=app, node=node):
                self._declined.setdefault(app, set()).add(node)
            case SetBudget():
                return to_wire(self._set_budget(message))
            case PublishPlan():
                return to_wire(self._publish(message))
            case PublishBatch():
                return self._publish_batch(message)
            case StopApp(app=app):
                return self._stop_app(app)
            case SecretsChanged(app=app):
                return self._secrets_changed(app)
            case SyncRequest(requester=who):
                self._sync(who)
            case AgentSync(node=node, apps=apps, instances=infos):
                self._agent_sync(node, apps, infos)
            case ClaimSwitch(app=app, node=node, lease=lease):
                return self._switches.claim(app, node, lease)
            case ReleaseSwitch(app=app, node=node):
                self._switches.release(app, node)
            case RolloutFailed():
                self._rollout_failed(message)
            case _ if isinstance(message, MESSAGES):
                return self._rollouts.handle(message)
            case _SyncDeadline():
                if self._wait:
                    self._end_wait()
            case GetStatus(app=app):
                return self.status(app)
            case GetPlans():
                return {"plans": [to_wire(p) for p in self._plans.values()],
                        "budgets": [to_wire(b) for b in self._budgets.values()]}
            case GetInfo():
                return {"name": "fabric", "plans": len(self._plans),
                        "instances": len(self._instances), "syncing": sorted(self._wait.waiting),
                        **self._peers.describe()}
            case Crash():
                raise CrashRequested("crash requested")
            case _:
                raise BadPlan(f"the fabric does not understand {type(message).__name__}")
        return None

    # -- plans and budgets -----------------------------------------------------------------

    def _set_budget(self, msg: SetBudget) -> Budget:
        budget = budget_of(msg)
        if self._budgets.get(msg.app) == budget:
            return budget  # unchanged: no write, no broadcast
        assert self._store is not None
        self._store.save(None, budget)
        self._budgets[msg.app] = budget
        if msg.app in self._plans:
            self._declined.pop(msg.app, None)
            self._broadcast(msg.app)
        return budget

    def _publish_batch(self, batch: PublishBatch) -> dict[str, Any]:
        """All of the batch or nothing: every check runs before one write of all of it.

        Raises:
            PlanMoved: an expected plan moved since the batch was computed (exit 1).
            BadPlan: a plan of the batch is refused (exit 2).
        """
        check_batch(batch, self._plans)
        owners = host_owners(self._plans, batch.plans, batch.stops)
        for msg in batch.plans:
            check_publish(msg, self._plans, self._digest_known, owners)
        writes = []
        for msg in batch.plans:
            self._generation += 1
            plan, budget = next_plan(msg, self._plans.get(msg.app), self._budgets.get(msg.app),
                                     self._generation, time.time())
            writes.append((self._rollouts.shape(msg, plan, self._plans.get(msg.app),
                                                self._everything()), budget))
        assert self._store is not None
        expect = {v.app: self._plans.get(v.app) for v in batch.expect}
        if not self._store.save_batch(
                [(plan, None if budget == self._budgets.get(plan.app) else budget)
                 for plan, budget in writes], batch.stops, expect):
            raise PlanMoved(moved_message(["a plan it names changed in the store"]))
        for (plan, budget), msg in zip(writes, batch.plans, strict=True):
            self._install(plan, budget)
            self._rollouts.published(plan, msg.who, msg.version)
        for app in batch.stops:
            self._rollouts.stopped(app)
            self._forget(app)
        return {"plans": [to_wire(plan) for plan, _ in writes], "stopped": list(batch.stops)}

    def _publish(self, msg: PublishPlan) -> Plan:
        check_publish(msg, self._plans, self._digest_known)
        self._generation += 1
        plan, budget = next_plan(msg, self._plans.get(msg.app), self._budgets.get(msg.app),
                                 self._generation, time.time())
        plan = self._rollouts.shape(msg, plan, self._plans.get(msg.app), self._everything())
        assert self._store is not None
        self._store.save(plan, budget if budget != self._budgets.get(msg.app) else None)
        self._install(plan, budget)
        self._rollouts.published(plan, msg.who, msg.version)
        return plan

    def _replace(self, plan: Plan) -> Plan:
        """Save and apply a plan whose budget stays (a canary promoted, new secrets)."""
        assert self._store is not None
        self._store.save(plan, None)
        self._install(plan, self._budgets[plan.app])
        return plan

    def _install(self, plan: Plan, budget: Budget) -> None:
        """A saved plan takes effect: the agents and the edge hear of it."""
        self._plans[plan.app] = plan
        self._budgets[plan.app] = budget
        self._declined.pop(plan.app, None)
        self._broadcast(plan.app)
        self._push.now()
        self._rollouts.schedule()

    def _stop_app(self, app: str) -> dict[str, Any]:
        if app not in self._plans:
            raise BadPlan(f"no plan for app {app!r}")
        assert self._store is not None
        self._store.delete(app)
        self._rollouts.stopped(app)
        self._forget(app)
        return {"app": app, "stopped": True}

    def _forget(self, app: str) -> None:
        """A deleted plan takes effect: its instances drain and stop, nothing respawns."""
        del self._plans[app]
        self._scale.forget(app)
        self._declined.pop(app, None)
        self._switches.forget(app)
        self._restarting.pop(app, None)
        self._broadcast(app)
        self._push.now()

    def _secrets_changed(self, app: str) -> dict[str, Any]:
        """A new generation of the same digest with the next secrets count: a blue/green
        rollout onto the new values (nothing to do for an app without a plan: its first
        instances open the values when they start). ``previous`` is the same digest: a failed
        rollout goes back to the instances of the previous count, which still run."""
        plan = self._plans.get(app)
        if plan is None:
            return {"app": app, "rollout": False}
        self._generation += 1
        new = self._replace(with_next_secrets(plan, self._generation, time.time()))
        return {"app": app, "rollout": True, "generation": new.generation,
                "digest": new.digest}

    def _rollout_failed(self, msg: RolloutFailed) -> None:
        plan = self._plans.get(msg.app)
        if plan is None or plan.digest != msg.digest or plan.status == PlanStatus.FAILED:
            return
        self._generation += 1
        self._rollouts.failed(plan, msg.reason)
        new = reverted(plan, msg.reason, self._generation, time.time())
        assert self._store is not None
        self._store.save(new, None)
        self._plans[msg.app] = new
        self._broadcast(msg.app)
        self._push.now()  # a canary's weights leave the routes

    # -- slots -----------------------------------------------------------------------------

    def _limit(self, plan: Plan) -> int:
        budget = self._budgets.get(plan.app)
        return plan.max if budget is None else min(plan.max, budget.max_instances)

    def _claim(self, app: str, node: str) -> SlotReply:
        plan = self._plans.get(app)
        if plan is None:
            return SlotReply(False, "no plan")
        if self._wait:
            return SlotReply(False, "fabric re-syncing")
        reply = self._scale.claim(app, node) or self._slots.claim(app, node, self._limit(plan))
        if reply.granted:
            self._declined.get(app, set()).discard(node)
        return reply

    # -- peers -----------------------------------------------------------------------------

    def _peer_update(self, update: PeerUpdate) -> None:
        """Apply what the rest of the mesh changed (nothing ever, on one machine)."""
        changed, self._generation = fold_update(update, self._plans, self._budgets,
                                                self._declined, self._generation)
        if update.check_slots:
            for app, node in self._slots.lost():
                log.warning("fabric: %s lost its slot of %s while cut off; stopping it",
                            node, app)
                self._names.tell(node, PlanChanged(app, None, None))
        if update.resynced:
            self._after_sync()
            return
        for app in sorted(changed):
            self._broadcast(app)
        if update.routes or update.plans:
            self._push.now()
        self._rollouts.schedule()

    # -- instances and routes ----------------------------------------------------------------

    def _instance(self, info: InstanceInfo) -> None:
        self._peers.publish(info)
        if info.state == InstanceState.STOPPED and info.reason:
            # failed: its supervisor backs off, restarts
            self._restarting.setdefault(info.app, {})[info.node] = info.restarts + 1
        elif info.state == InstanceState.READY:
            self._restarting.get(info.app, {}).pop(info.node, None)
        old = self._instances.get(info.id)
        if info.state == InstanceState.STOPPED:
            self._instances.pop(info.id, None)
        else:
            self._instances[info.id] = info
            if old is not None and (old.state, old.url, old.restarts, old.serving) == (
                    info.state, info.url, info.restarts, info.serving):
                return  # a sample: the routes cannot have changed
        if moves_routes(old, info):
            self._push.soon()  # once per burst of reports (route_push.py)
        self._scale.instance_changed()

    def _everything(self) -> list[InstanceInfo]:
        return [*self._instances.values(), *self._peers.instances()]

    def _endpoints(self) -> EndpointsChanged:
        everything = self._everything()
        restarts: dict[str, int] = {}
        for info in everything:
            restarts[info.app] = restarts.get(info.app, 0) + info.restarts
        table = weighted_routes(routes(self._plans, everything), self._plans, everything)
        return EndpointsChanged(table, tuple(sorted(restarts.items())))

    def _sync(self, who: str) -> None:
        if who == "edge":
            self._push.resend()
            return
        if self._wait.asked(who):  # its plans once the wait is over; it may have missed
            self._names.tell(who, FabricRestarted())  # the question (it started since)
            return
        if self._scale.sync_agent(who):
            return
        for app in self._plans:
            self._names.tell(who, PlanChanged(app, self._plans[app], self._budgets.get(app)))
        self._names.tell(who, PlansSynced(tuple(sorted(self._plans))))

    def _agent_sync(self, node: str, apps: tuple[str, ...],
                    infos: tuple[InstanceInfo, ...]) -> None:
        for app in apps:
            self._slots.adopt(app, node)
        self._scale.adopt(node, infos)
        for info in infos:  # an instance's own report (it is told to resync) is newer
            if info.state != InstanceState.STOPPED:
                self._instances.setdefault(info.id, info)
        if self._wait.answered(node):
            self._end_wait()

    def _end_wait(self) -> None:
        again = self._wait.end()
        self._after_sync()
        for node in again:  # a restarted agent's plans, and the list it keeps (PlansSynced)
            self._sync(node)

    def _after_sync(self) -> None:
        self._push.now()
        for app in self._plans:
            self._broadcast(app)

    def _broadcast(self, app: str) -> None:
        if self._scale.reassign(force={app}):
            return
        plan, budget = self._plans.get(app), self._budgets.get(app)
        # scaled down: the nodes beyond the limit give their slot back
        evicted = self._slots.evict(app, self._limit(plan)) if plan is not None else set()
        message = PlanChanged(app, plan, budget)
        for node in self._nodes:
            self._names.tell(node, PlanChanged(app, None, None) if node in evicted else message)

    # -- views -----------------------------------------------------------------------------

    def status(self, app: str | None = None) -> dict[str, Any]:
        """The ``status --json`` document (docs/reference.md) over every node of the mesh."""
        local = {n: ("up" if self._names.get(n) is not None else "restarting")
                 for n in self._nodes}
        live, gone = self._peers.nodes(local)
        restarting = {a: max(by_node.values()) for a, by_node in self._restarting.items()
                      if by_node}
        doc = status_document(self._plans, self._budgets, self._everything(), live,
                              self._declined, app, restarting, gone)
        fabric = self._peers.store_doc()
        if fabric is not None:
            doc["fabric"] = fabric
        self._rollouts.decorate(doc, self._plans, self._everything())
        self._scale.annotate(doc)
        return doc
