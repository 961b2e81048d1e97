"""The fabric's scaling side: placement messages in, per-node counts out to the agents.

:class:`ScaleHooks` is composed into the :class:`~mycelium.fabric.fabric.Fabric` and runs in its
mailbox (it is never an actor of its own). It sees the fabric's plans, budgets and instances
through :class:`FabricParts` (read-only callables), asks its :class:`~.scaler.Scaler` what each
app wants and where, and tells each agent a :class:`~mycelium.messages.PlanChanged` whose
``count`` is how many instances that node runs (0: the app leaves the node). Only what changed
is told. A periodic tick re-decides the apps whose count moves by itself (scale to
zero, autoscaling).

In a mesh of several members (``drains`` is then a :class:`~.mesh_scale.MeshScale`) the same
code places over every member's nodes, but only on the member elected placer; it publishes
the counts through etcd, and every member tells its own agents their counts from what was
published (:meth:`ScaleHooks.reassign`). Capacities, the edges' loads (summed over members),
wakes and drains are shared the same way, so a drain, a wake or an autoscaling step asked
through any member is decided once.

With ``many_per_node`` False it stays out of the way: every agent hears every plan with
``count`` 1 and claims its slot (kept for a fabric that lets its nodes claim slots).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mycelium._logger import get_logger
from mycelium.messages import (
    Budget,
    DrainNode,
    EdgeLoad,
    InstanceInfo,
    NodeCapacity,
    Plan,
    PlanChanged,
    PlansSynced,
    SlotReply,
    WakeApp,
)
from mycelium.states import AppState, InstanceState
from supervisors.reports import Report, Reporter, emit
from supervisors.timers import TimerHandle, shared_timers

from .errors import BadPlan, FabricError
from .mesh_scale import MeshChange, MeshScale, Published
from .names import Names
from .scaler import DrainBook, MemoryDrains, Scaler
from .scaling import SCALE_DOWN_AFTER

__all__ = ["TICK", "DrainRefused", "FabricParts", "ScaleHooks", "node_order"]

log = get_logger(__name__)

TICK = 0.25
"""Seconds between two re-decisions of the apps that scale by themselves."""


@dataclass(frozen=True, slots=True)
class _Tick:
    """Time to re-decide scale to zero and autoscaling (a timer's, off the wire)."""


_OWN = (NodeCapacity, EdgeLoad, WakeApp, DrainNode, _Tick)

WAKE_WINDOW = 30.0
"""Seconds a member's wake request stays worth honouring for a placer elected after it."""

REASON_EVERY = 1.0
"""Seconds between two publications of an app whose only change is its reason's wording."""


def node_order(node: str) -> tuple[str, int, str]:
    """``a-2`` before ``a-10``: member prefix, then index."""
    prefix, _, index = node.rpartition("-")
    return (prefix, int(index), node) if index.isdigit() else (node, 0, node)


class DrainRefused(FabricError):
    """A drain that cannot even start (no other node could take anything): exit 1."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class FabricParts:
    """What the hooks may see of their fabric: its names, nodes and read-only views."""

    names: Names
    nodes: tuple[str, ...]
    plans: Callable[[], Mapping[str, Plan]]
    budgets: Callable[[], Mapping[str, Budget]]
    instances: Callable[[], list[InstanceInfo]]
    tell_self: Callable[[Any], None]
    """Puts a message into the fabric's mailbox (the tick; the fabric hands it back)."""


class ScaleHooks:
    """The fabric's placement and scaling (see the module docstring).

    Args:
        parts: The fabric's views.
        many_per_node: Place centrally (True) or leave each node to claim one slot (False).
        drains: Where drained nodes are kept; a :class:`MeshScale` makes the hooks one
            member's share of a mesh's placement.
        report: Receives a supervision-log record per scale event.
        down_after: Seconds an autoscaled app stays below target before it scales down
            (``[scale] down_after``).
    """

    def __init__(self, parts: FabricParts, many_per_node: bool, drains: DrainBook | None,
                 report: Reporter | None, down_after: float = SCALE_DOWN_AFTER) -> None:
        self.parts = parts
        self.many = many_per_node
        self.mesh: MeshScale | None = drains if isinstance(drains, MeshScale) else None
        self._report = report
        self.scaler = Scaler(drains if drains is not None else MemoryDrains(), self._event,
                             down_after)
        self._told: dict[str, dict[str, int]] = {}  # app → own node → count told
        self._rows: dict[str, dict[str, int]] = {}  # app → node → count, every node
        self._published: dict[str, tuple[Published, float]] = {}
        self._timer: TimerHandle | None = None
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Follow the mesh's shared placement, start ticking (scale to zero and autoscaling
        move by themselves)."""
        if self.mesh is not None:
            self.mesh.start(self.parts.tell_self)
            if self.mesh.leader():  # elected at once, or a restarted placer's fabric
                self._take_over(self.mesh, time.time())
        if self.many:
            self._schedule()

    def stop(self) -> None:
        """Stop ticking and following."""
        self._stopped = True
        if self.mesh is not None:
            self.mesh.stop()
        if self._timer is not None:
            shared_timers().cancel(self._timer)
            self._timer = None

    def _schedule(self) -> None:
        if not self._stopped:
            self._timer = shared_timers().call_later(TICK, lambda: self.parts.tell_self(
                _Tick()))

    def _event(self, app: str, sentence: str) -> None:
        log.info("fabric: %s %s", app, sentence)
        emit(self._report, Report(ts=time.time(), event="scaled", supervisor="mesh/fabric",
                                  child=app, reason=sentence, extra={"app": app}))

    # -- messages --------------------------------------------------------------------------

    def owns(self, message: Any) -> bool:
        """Whether the message is one :meth:`handle` takes."""
        return isinstance(message, _OWN) or (self.mesh is not None and self.mesh.owns(message))

    def _nodes(self) -> tuple[str, ...]:
        """The nodes placed over: this fabric's, and in a mesh every live member's."""
        if self.mesh is None:
            return self.parts.nodes
        return tuple(sorted(set(self.mesh.capacity()) | set(self.parts.nodes),
                            key=node_order))

    def handle(self, message: Any) -> Any:
        """Apply one scaling message (in the fabric's mailbox); the reply, if asked.

        Raises:
            BadPlan: an unknown node, or a drain in a mesh that places per node.
            DrainRefused: nothing else could take the node's instances.
        """
        now = time.time()
        mesh = self.mesh
        match message:
            case NodeCapacity(node=node, cpu=cpu, mem_mb=mem):
                if mesh is not None:
                    mesh.publish_capacity(node, cpu, mem)
                if self.scaler.placer.set_capacity(node, cpu, mem):
                    self.reassign()
            case EdgeLoad(loads=loads):
                self.scaler.load(loads if mesh is None else mesh.publish_load(loads), now)
                if any(p.target_concurrency is not None for p in self.parts.plans().values()):
                    self.reassign()  # a step up in load is acted on now, not at the next tick
            case WakeApp(app=app):
                if mesh is not None and not mesh.leader():
                    mesh.wake(app)  # the placer wakes it, once for every member's edge
                else:
                    self._wake(app, now)
            case DrainNode(node=node, undrain=undrain):
                return self._drain(node, undrain)
            case _Tick():
                self._schedule()
                # in a mesh, replacements Ready on another member move a drain on
                if mesh is not None or any(p.min == 0 or p.target_concurrency is not None
                                           for p in self.parts.plans().values()):
                    self.reassign()
            case _ if mesh is not None:
                self._shared(mesh, mesh.handle(message), now)
        return None

    def _wake(self, app: str, now: float) -> None:
        if self.many and self.scaler.wake(app, self.parts.plans().get(app), now):
            self._event(app, "woken by a held request: one instance starts")
            self.reassign()

    def _shared(self, mesh: MeshScale, change: MeshChange, now: float) -> None:
        """Apply what the other members shared: capacities, drains, loads, wakes, counts."""
        placer = self.scaler.placer
        if change.capacity:
            placer.capacity = {**mesh.capacity(), **{
                n: c for n, c in placer.capacity.items() if n in self.parts.nodes}}
        if change.drains:
            self._sync_drains(mesh.drained())
        if change.loads:
            self.scaler.load(change.loads, now)
        if mesh.leader():
            if change.became_leader:
                self._take_over(mesh, now)
            for app in change.wakes:
                self._wake(app, now)
        if change.capacity or change.drains or change.placement or change.became_leader:
            self.reassign()

    def _sync_drains(self, shared: Iterable[str]) -> None:
        """Close and open nodes as the mesh's drains say."""
        placer = self.scaler.placer
        wanted, here = set(shared), set(placer.drained_nodes())
        for node in sorted(wanted - here):
            placer.drain(node)
        for node in sorted(here - wanted):
            placer.undrain(node)

    def _take_over(self, mesh: MeshScale, now: float) -> None:
        """This member was just elected placer: carry on the published decisions."""
        plans = self.parts.plans()
        published = {a: p for a, p in mesh.placement().items() if a in plans}
        self.scaler.placer.take_over({a: p.counts for a, p in published.items()})
        for app, placed in published.items():
            self.scaler.adopt(app, plans[app], placed.desired, now)
            self._published[app] = (placed, now)
        for app in mesh.recent_wakes(WAKE_WINDOW):
            self.scaler.wake(app, plans.get(app), now)

    def _drain(self, node: str, undrain: bool) -> dict[str, Any]:
        if self.mesh is not None:  # judged on etcd's drains, not on a watch that may lag
            self._sync_drains(self.mesh.load())
        nodes = self._nodes()
        if node not in nodes:
            raise BadPlan(f"unknown node {node!r}: the nodes are {', '.join(nodes)}")
        if not self.many:
            raise BadPlan("this mesh places one instance per node: drain a node by stopping "
                          "it")
        if not undrain:
            runs = [i for i in self.parts.instances() if i.node == node
                    and i.state != InstanceState.STOPPED]
            others = [n for n in nodes if n != node
                      and n not in self.scaler.placer.drained_nodes()]
            if runs and not others:
                apps = sorted({i.app for i in runs})
                raise DrainRefused(f"cannot drain {node}: no other open node for "
                                   f"{', '.join(apps)}")
        changed = self.scaler.drain(node, undrain)
        self.reassign()
        return {"node": node, "changed": changed, **self.node_view(node)}

    def node_view(self, node: str) -> dict[str, Any]:
        """The node's drain state and what is stuck on it."""
        runs = any(i.node == node and i.state != InstanceState.STOPPED
                   for i in self.parts.instances())
        doc = self.scaler.node_doc(node, self.parts.budgets(), runs)
        return {"state": doc.get("state", "up"), "stuck": doc.get("stuck", [])}

    # -- placement -------------------------------------------------------------------------

    def claim(self, app: str, node: str) -> SlotReply | None:
        """An agent's slot claim: granted when the placement gives the node an instance (None:
        the fabric does not place, its slot claims decide)."""
        if not self.many:
            return None
        if self._told.get(app, {}).get(node, 0) > 0:
            return SlotReply(True)
        return SlotReply(False, "not placed on this node")

    def forget(self, app: str) -> None:
        """An app's plan is gone."""
        self.scaler.forget(app)

    def instance_changed(self) -> None:
        """An instance changed state: drains and wakes may move on (nothing else does)."""
        if self.scaler.placer.drained_nodes() or any(
                p.min == 0 for p in self.parts.plans().values()):
            self.reassign()

    def adopt(self, node: str, infos: Iterable[InstanceInfo]) -> None:
        """A re-synced agent runs these instances: they stay where they are."""
        plans = self.parts.plans()
        counts: dict[str, int] = {}
        for info in infos:
            plan = plans.get(info.app)
            if plan is not None and info.state != InstanceState.STOPPED \
                    and info.digest == plan.digest:
                counts[info.app] = counts.get(info.app, 0) + 1
        self.scaler.placer.adopt(node, counts)

    def reassign(self, force: Iterable[str] = ()) -> bool:
        """Re-decide every app's count and place it; tell the nodes whose count moved.

        In a mesh, the placer decides for every member's nodes and publishes the counts; any
        other member tells its agents what the placer published.

        Returns False (and does nothing) where the fabric does not place (``many_per_node``
        off): the caller then offers the plan to every node as before.
        """
        if not self.many:
            return False
        forced = set(force)
        plans, budgets = self.parts.plans(), self.parts.budgets()
        if self.mesh is not None and not self.mesh.leader():
            published = self.mesh.placement()
            rows = {a: {n: c for n, c in p.counts.items() if c} for a, p in published.items()
                    if a in plans}
            self.scaler.placer.follow(rows)
            for app, placed in published.items():
                self.scaler.placer.want[app] = placed.desired
                self.scaler.placer.reason[app] = placed.reason
            self._tell(plans, budgets, rows, forced)
            return True
        instances = self.parts.instances()
        self.scaler.update(plans, budgets, self.scaler.ready_counts(plans, instances),
                           time.time())
        rows = self.scaler.assign(plans, budgets, self._nodes(), instances)
        self._tell(plans, budgets, rows, forced)
        if self.mesh is not None:
            self._publish(self.mesh, plans, rows)
        return True

    def _tell(self, plans: Mapping[str, Plan], budgets: Mapping[str, Budget],
              rows: Mapping[str, Mapping[str, int]], forced: set[str]) -> None:
        """Tell this fabric's own agents every count that moved (every count of ``forced``)."""
        own = self.parts.nodes
        self._rows = {a: dict(r) for a, r in rows.items() if a in plans}
        for app in sorted(set(plans) | set(self._told)):
            plan = plans.get(app)
            row = {n: c for n, c in rows.get(app, {}).items() if c and n in own} \
                if plan is not None else {}
            old = self._told.get(app, {})
            if app not in forced and row == old:
                continue
            for node in own:
                n = row.get(node, 0)
                if app in forced or n != old.get(node, 0):
                    self.parts.names.tell(node, PlanChanged(app, plan, budgets.get(app), n)
                                          if n and plan is not None
                                          else PlanChanged(app, None, None))
            if plan is None:
                self._told.pop(app, None)
            else:
                self._told[app] = row

    def _publish(self, mesh: MeshScale, plans: Mapping[str, Plan],
                 rows: Mapping[str, Mapping[str, int]]) -> None:
        """The placer shares its counts (an app whose only change is its reason's wording at
        most every :data:`REASON_EVERY` seconds) and what draining nodes cannot shed."""
        now = time.time()
        placer = self.scaler.placer
        for app in sorted(set(plans) | set(self._published) | set(mesh.placement())):
            if app not in plans:
                if mesh.publish(app, None):
                    self._published.pop(app, None)
                continue
            placed = Published(dict(rows.get(app, {})), placer.want.get(app, 0),
                               placer.reason.get(app, ""))
            old, at = self._published.get(app, (None, 0.0))
            if old == placed or (old is not None and now - at < REASON_EVERY and (
                    old.counts, old.desired) == (placed.counts, placed.desired)):
                continue
            if mesh.publish(app, placed):
                self._published[app] = (placed, now)
        mesh.publish_stuck({n: sorted(placer.stuck(n).values())
                            for n in placer.drained_nodes()})

    def sync_agent(self, node: str) -> bool:
        """A (re)started agent asks what it runs: its counts, then the list of them (False:
        the fabric does not place, it offers every plan)."""
        if not self.many:
            return False
        plans, budgets = self.parts.plans(), self.parts.budgets()
        mine = sorted(a for a, row in self._told.items() if row.get(node, 0) > 0)
        for app in mine:
            self.parts.names.tell(node, PlanChanged(app, plans[app], budgets.get(app),
                                                    self._told[app][node]))
        self.parts.names.tell(node, PlansSynced(tuple(mine)))
        return True

    # -- status ----------------------------------------------------------------------------

    def annotate(self, doc: dict[str, Any]) -> None:
        """Add capacity, drain state, ``desired``/``desired_reason`` and ``idle`` to status."""
        plans, budgets = self.parts.plans(), self.parts.budgets()
        running: dict[str, dict[str, int]] = {}
        for a in doc["apps"]:
            for i in a["instances"]:
                if i["state"] != InstanceState.STOPPED:
                    here = running.setdefault(i["node"], {})
                    here[a["app"]] = here.get(a["app"], 0) + 1
        follower = self.mesh is not None and not self.mesh.leader()
        stuck = self.mesh.stuck() if self.mesh is not None and follower else {}
        for node in doc["nodes"]:
            extra = self.scaler.node_doc(node["name"], budgets, node["name"] in running,
                                         None if self.many else running.get(node["name"], {}))
            if extra.get("state") == "draining" and stuck.get(node["name"]):
                extra["stuck"] = list(stuck[node["name"]])  # the placer's word
            if node["state"] != "up":
                extra.pop("state", None)
            node.update(extra)
        if not self.many:
            return
        for app in doc["apps"]:
            plan = plans.get(app["app"])
            extra = self.scaler.app_doc(app["app"], plan)
            if "desired" in extra:
                placed = sum(self._rows.get(app["app"], {}).values())
                extra["desired"] = min(extra["desired"], placed) if placed else 0
            app.update(extra)
            live = [i for i in app["instances"] if i["state"] != InstanceState.STOPPED]
            idle = (plan is not None and plan.min == 0 and not extra.get("desired")) \
                if follower else self.scaler.idle(app["app"], plan)
            if idle and not live:
                app["state"] = AppState.IDLE
