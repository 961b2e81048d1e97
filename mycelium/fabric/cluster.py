"""The fabric of one member of a multi-machine mesh (SPEC §9): the same actor, state in etcd.

:class:`ClusterFabric` is the :class:`~mycelium.fabric.fabric.Fabric` with three changes:

- slot claims go through etcd transactions (:meth:`EtcdStore.claim_slot`), so ``max_instances``
  holds across members, and a dead member's slots free themselves when its lease expires;
- the local instances are published under the member's lease, and the other members'
  instances (learnt by watching etcd) join the routes pushed to this member's edge and the
  status document; a node that disappears from etcd shows ``lost``;
- plans and budgets written by any member reach this member's agents through the watch; when a
  slot frees itself (a member died), the plan is offered to the local agents again, which is how
  instances are re-placed on live nodes.

Every etcd call is best-effort inside the actor: while etcd is away the local workloads keep
serving and the routes keep their last view; the store retries and republishes on return.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mycelium._logger import get_logger
from mycelium.messages import (
    Budget,
    ClaimSlot,
    DeregisterEndpoint,
    EndpointsChanged,
    GetInfo,
    InstanceInfo,
    InstanceStatus,
    Plan,
    PlanChanged,
    RegisterEndpoint,
    ReleaseSlot,
    SlotReply,
    from_wire,
)

from .etcd import EtcdStore, EtcdUnavailable
from .etcd_client import Event
from .fabric import Fabric
from .names import Names
from .state import StoredState
from .view import routes, status_document

__all__ = ["ClusterFabric", "SharedStore"]

log = get_logger(__name__)


# Private messages of the actor to itself (from its watch thread), off the wire on purpose:
# they carry etcd events, which no one outside this process may forge.
@dataclass(frozen=True, slots=True)
class _Remote:
    """A batch of etcd watch events (from the watch thread to the actor)."""

    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class _Member:
    """The member's connection to etcd changed: ``etcd-lost``, ``etcd-back``, ``lease-renewed``."""

    kind: str


class SharedStore:
    """The member's :class:`EtcdStore` as the fabric's Store: ``close`` leaves it open.

    The store (and its lease) belongs to the member, not to one life of the fabric actor: a
    crashed fabric must not revoke the lease of every workload on this machine.
    """

    def __init__(self, store: EtcdStore) -> None:
        self.store = store

    def load(self) -> StoredState:
        """Every plan and budget in the mesh."""
        return self.store.load()

    def save(self, plan: Plan | None, budget: Budget | None) -> None:
        """Write a plan and/or a budget in one etcd transaction."""
        self.store.save(plan, budget)

    def delete(self, app: str) -> None:
        """Forget an app's plan."""
        self.store.delete(app)

    def save_batch(self, writes: Sequence[tuple[Plan, Budget | None]], deletes: Sequence[str],
                   expect: Mapping[str, Plan | None]) -> bool:
        """One etcd transaction, only if etcd still holds the expected plans."""
        return self.store.save_batch(writes, deletes, expect)

    def close(self) -> None:
        """Nothing: the member closes the store when it stops."""


class ClusterFabric(Fabric):
    """The fabric of one member (registered as ``fabric``, like the single-machine one).

    Args:
        names: The member's registered names.
        store: The member's joined etcd store.
        nodes: This member's node names.
        digest_known: Whether the local repo holds a digest (for deploys made here).
        advertise_host: The host other machines use to reach this member's workloads.
        prefetch: Called (must not block) with the digest of every plan seen, so that each
            member keeps a verified copy of every planned spore: instances can be re-placed
            here even after the member that had the spore died.
        parallel: Instances replaced at a time in a rollout (``[rollout] parallel``).
    """

    def __init__(self, names: Names, store: EtcdStore, nodes: tuple[str, ...],
                 digest_known: Any = lambda _d: True, advertise_host: str = "127.0.0.1",
                 prefetch: Callable[[str], None] | None = None, *, parallel: int = 1) -> None:
        super().__init__(names, lambda: SharedStore(store), nodes, digest_known,
                         parallel=parallel)
        self._etcd = store
        self._prefetch = prefetch or (lambda _digest: None)
        self._advertise = advertise_host
        self._remote: dict[str, InstanceInfo] = {}
        self._members: dict[str, str] = {}
        self._seen_nodes: set[str] = set()
        self._left: set[str] = set()
        self._shared: dict[str, tuple[Any, ...]] = {}
        self._watch_stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        """Load plans, the other members' nodes and instances; then follow etcd's changes."""
        super().on_start()
        for plan in self._plans.values():
            self._prefetch(plan.digest)
        try:
            revision = self._refresh()
        except EtcdUnavailable as exc:
            log.warning("fabric: etcd unavailable at start (%s); following it when it returns",
                        exc)
            revision = 0
        self._etcd.on_event(lambda kind: self._tell_self(_Member(kind)))
        self._etcd.watch(lambda events: self._tell_self(_Remote(tuple(events))),
                         stop=self._watch_stop, start_revision=revision)

    def _refresh(self) -> int:
        """Re-read the mesh's nodes and remote instances; returns the revision read at."""
        kvs, revision = self._etcd.client.get_prefix(self._etcd.prefix)
        self._members.clear()
        self._remote.clear()
        self._left.clear()
        for kv in kvs:
            self._apply(Event("put", kv.key, kv.value, kv.mod_revision), initial=True)
        return revision + 1

    def on_stop(self) -> None:
        """Stop following etcd; then as the single-machine fabric."""
        self._watch_stop.set()
        super().on_stop()

    def on_failure(self, *exc: object) -> None:
        """Stop following etcd; the successor starts its own watch."""
        self._watch_stop.set()
        super().on_failure(*exc)

    # -- dispatch --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Route the cluster's messages; everything else as the single-machine fabric."""
        match message:
            case _Remote(events=events):
                changed = False
                for event in events:
                    changed = self._apply(event) or changed
                if changed:
                    self._push_routes()
                return None
            case _Member(kind=kind):
                if kind in ("etcd-back", "lease-renewed"):
                    with contextlib.suppress(EtcdUnavailable):
                        self._refresh()
                        if kind == "lease-renewed":
                            self._drop_lost_slots()
                    self._after_sync()
                return None
            case ClaimSlot(app=app, node=node):
                return self._claim_cluster(app, node)
            case ReleaseSlot(app=app, node=node):
                with contextlib.suppress(EtcdUnavailable):
                    self._etcd.release_slot(app, node)
                return super().on_receive(message)
            case RegisterEndpoint(instance=info) | InstanceStatus(instance=info) | \
                    DeregisterEndpoint(instance=info):
                self._publish_instance(info)
                return super().on_receive(message)
            case GetInfo():
                info = super().on_receive(message)
                info.update(member=self._etcd.member, etcd=self._etcd.connected,
                            remote_instances=len(self._remote))
                return info
        return super().on_receive(message)

    # -- etcd events -----------------------------------------------------------------------

    def _apply(self, event: Event, initial: bool = False) -> bool:
        """Fold one etcd change into the view; True when the routes may have changed."""
        rest = event.key[len(self._etcd.prefix):]
        kind, _, name = rest.partition("/")
        put = event.kind == "put"
        if kind == "nodes":
            if put:
                self._members[name] = str(orjson.loads(event.value).get("member", ""))
                self._seen_nodes.add(name)
            else:
                self._members.pop(name, None)
                for iid in [i for i, inf in self._remote.items() if inf.node == name]:
                    del self._remote[iid]
                return True
        elif kind == "left":
            if put:
                self._left.add(name)
                self._seen_nodes.add(name)
            else:
                self._left.discard(name)
        elif kind == "endpoints":
            if put:
                info = from_wire(orjson.loads(event.value))
                if isinstance(info, InstanceInfo) and info.node not in self._nodes:
                    self._remote[info.id] = info
                    return True
            elif self._remote.pop(name, None) is not None:
                return True
        elif kind == "slots" and not put and not initial:
            app = name.partition("/")[0]
            if app in self._plans:  # a slot freed itself: offer the plan to our nodes again
                self._declined.pop(app, None)
                self._broadcast(app)
        elif kind in ("plans", "budgets") and not initial:
            self._remote_plan(kind, name, event)
            return True
        return False

    def _remote_plan(self, kind: str, app: str, event: Event) -> None:
        if kind == "plans":
            if event.kind == "put":
                plan = from_wire(orjson.loads(event.value))
                if not isinstance(plan, Plan) or plan == self._plans.get(app):
                    return
                self._plans[app] = plan
                self._prefetch(plan.digest)  # a copy here survives the publisher's death
                self._generation = max(self._generation, plan.generation)
                self._declined.pop(app, None)
            elif self._plans.pop(app, None) is None:
                return
        else:
            if event.kind != "put":
                return
            budget = from_wire(orjson.loads(event.value))
            if not isinstance(budget, Budget) or budget == self._budgets.get(app):
                return
            self._budgets[app] = budget
        self._broadcast(app)

    # -- slots and instances -----------------------------------------------------------------

    def _claim_cluster(self, app: str, node: str) -> SlotReply:
        plan = self._plans.get(app)
        if plan is None:
            return SlotReply(False, "no plan")
        if self._syncing:
            return SlotReply(False, "fabric re-syncing")
        budget = self._budgets.get(app)
        limit = plan.max if budget is None else min(plan.max, budget.max_instances)
        try:
            granted = self._etcd.claim_slot(app, node, limit)
        except EtcdUnavailable as exc:
            return SlotReply(False, f"etcd unavailable: {exc}")
        if not granted:
            return SlotReply(False, f"max_instances reached ({limit}) across the mesh")
        self._slots.setdefault(app, set()).add(node)
        self._declined.get(app, set()).discard(node)
        return SlotReply(True)

    def _drop_lost_slots(self) -> None:
        """After our lease expired (a partition), stop what other members re-placed meanwhile.

        Our slot keys died with the lease; those another member took since are not ours any
        more, so the local instances holding them would exceed ``max_instances``: they stop.
        """
        for app, holders in self._slots.items():
            held = set(self._etcd.slots(app).values())
            for node in sorted(holders - held):
                if node in self._nodes:
                    log.warning("fabric: %s lost its slot of %s while cut off; stopping it",
                                node, app)
                    holders.discard(node)
                    self._names.tell(node, PlanChanged(app, None, None))

    def _broadcast(self, app: str) -> None:
        plan, budget = self._plans.get(app), self._budgets.get(app)
        evicted: set[str] = set()
        if plan is not None:
            limit = plan.max if budget is None else min(plan.max, budget.max_instances)
            try:
                held = self._etcd.slots(app)
            except EtcdUnavailable:
                held = {}
            for k, node in held.items():
                if k >= limit and node in self._nodes:  # scaled down: the last slots go
                    evicted.add(node)
                    with contextlib.suppress(EtcdUnavailable):
                        self._etcd.release_slot(app, node)
            self._slots.get(app, set()).difference_update(evicted)
        message = PlanChanged(app, plan, budget)
        for node in self._nodes:
            self._names.tell(node, PlanChanged(app, None, None) if node in evicted else message)

    def _publish_instance(self, info: InstanceInfo) -> None:
        """Share an instance with the other members when a routing or status fact changed.

        Resource samples (cpu, rss) alone are not written: every instance would write etcd
        every sample interval. The other members see the samples of the last real change.
        """
        facts = (info.state, info.url, info.pid, info.restarts, info.digest, info.ready_at)
        if info.state != "Stopped" and self._shared.get(info.id) == facts:
            return
        if info.state == "Stopped":
            self._shared.pop(info.id, None)
        else:
            self._shared[info.id] = facts
        url = info.url
        if url and self._advertise not in ("127.0.0.1", "localhost"):
            url = url.replace("://127.0.0.1:", f"://{self._advertise}:", 1)
        shared = dataclasses.replace(info, url=url)
        with contextlib.suppress(EtcdUnavailable):
            self._etcd.put_instance(shared)

    def _endpoints(self) -> EndpointsChanged:
        everything = [*self._instances.values(), *self._remote.values()]
        restarts: dict[str, int] = {}
        for info in everything:
            restarts[info.app] = restarts.get(info.app, 0) + info.restarts
        return EndpointsChanged(routes(self._plans, everything), tuple(sorted(restarts.items())))

    # -- views -----------------------------------------------------------------------------

    def status(self, app: str | None = None) -> dict[str, Any]:
        """SPEC §6's status document over the whole mesh (every member's nodes and instances)."""
        nodes = {n: ("up" if self._names.get(n) is not None else "restarting")
                 for n in self._nodes}
        nodes.update((n, "up") for n in self._members if n not in nodes)
        lost = sorted(n for n in self._seen_nodes if n not in nodes)
        doc = status_document(self._plans, self._budgets,  # desired counts live nodes only
                              [*self._instances.values(), *self._remote.values()],
                              nodes, self._declined, app)
        gone = ({"name": n, "state": "down" if n in self._left else "lost"} for n in lost)
        doc["nodes"] = sorted([*doc["nodes"], *gone], key=lambda n: str(n["name"]))
        doc["fabric"] = {"store": "etcd", "member": self._etcd.member,
                         "etcd": "connected" if self._etcd.connected else "unreachable"}
        return doc
