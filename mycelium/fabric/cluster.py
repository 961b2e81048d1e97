"""The etcd parts of a member's fabric in a multi-machine mesh: the same actor, state in etcd.

A member runs the ordinary :class:`~mycelium.fabric.fabric.Fabric` built with three etcd
collaborators (:func:`start_cluster_fabric` assembles them):

- :class:`SharedStore` keeps plans and budgets in etcd (the member's store, which outlives one
  life of the fabric actor);
- :class:`~.etcd_scale.EtcdScale` shares placement: one member at a time (elected through
  etcd) places every instance over every member's nodes, many per node, and publishes the
  counts each member's agents run; capacities, the edges' loads, wakes and drains travel
  through etcd too, so ``max_instances``, drains, scale to zero and autoscaling hold across
  members exactly as on one machine;
- :class:`EtcdPeers` publishes the local instances under the member's lease and follows etcd:
  the other members' instances join the routes pushed to this member's edge and the status
  document (a node that disappears from etcd shows ``lost``); plans and budgets written by any
  member reach this member's agents (a dead member's nodes leave the placer's capacities with
  its lease, which is how its instances are re-placed on live nodes).

Every etcd call is best-effort inside the actor: while etcd is away the local workloads keep
serving and the routes keep their last view; the store retries and republishes on return.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import pykka

from mycelium._logger import get_logger
from mycelium.messages import Budget, InstanceInfo, Plan, from_wire
from mycelium.states import InstanceState

from .etcd import EtcdStore, EtcdUnavailable
from .etcd_client import Event
from .etcd_scale import EtcdScale
from .etcd_switch import EtcdSwitches
from .fabric import Fabric
from .history import DEFAULT_KEEP
from .history_store import EtcdHistory
from .names import Names
from .peers import PeerConnection, PeerEvents, PeerUpdate
from .rollouts import Rollouts
from .scaling import SCALE_DOWN_AFTER
from .slots import LocalSlots
from .state import StoredState

__all__ = ["EtcdPeers", "SharedStore", "start_cluster_fabric"]

log = get_logger(__name__)


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


class EtcdPeers:
    """The other members, learnt by watching etcd; this member's instances, shared through it.

    Args:
        store: The member's joined etcd store.
        nodes: This member's node names.
        advertise_host: The host other machines use to reach this member's workloads.
        prefetch: Called (must not block) with the digest of every plan seen, so that each
            member keeps a verified copy of every planned spore: instances can be re-placed
            here even after the member that had the spore died.
    """

    def __init__(self, store: EtcdStore, nodes: tuple[str, ...],
                 advertise_host: str = "127.0.0.1",
                 prefetch: Callable[[str], None] | None = None) -> None:
        self._etcd = store
        self._nodes = nodes
        self._advertise = advertise_host
        self._prefetch = prefetch or (lambda _digest: None)
        self._remote: dict[str, InstanceInfo] = {}
        self._members: dict[str, str] = {}
        self._seen_nodes: set[str] = set()
        self._left: set[str] = set()
        self._shared: dict[str, tuple[Any, ...]] = {}
        self._watch_stop = threading.Event()

    # -- following etcd --------------------------------------------------------------------

    def start(self, plans: Iterable[Plan], tell: Callable[[Any], None]) -> None:
        """Prefetch every plan's spore, load the other members' view, then follow etcd."""
        for plan in plans:
            self._prefetch(plan.digest)
        try:
            revision, written = self._refresh()
        except EtcdUnavailable as exc:
            log.warning("fabric: etcd unavailable at start (%s); following it when it returns",
                        exc)
            revision, written = 0, ()
        if written:  # plans written between the store's load and this read: apply them too
            tell(PeerEvents(written))
        self._etcd.on_event(lambda kind: tell(PeerConnection(kind)))
        self._etcd.watch(lambda events: tell(PeerEvents(tuple(events))),
                         stop=self._watch_stop, start_revision=revision)

    def stop(self) -> None:
        """Stop following etcd."""
        self._watch_stop.set()

    def _refresh(self) -> tuple[int, tuple[Event, ...]]:
        """Re-read the mesh's nodes and remote instances.

        Returns:
            The revision to follow from, and the plans and budgets read: the fabric loaded its
            store a moment earlier, and one written in between would otherwise be missed (the
            fabric ignores the ones it already has).
        """
        kvs, revision = self._etcd.client.get_prefix(self._etcd.prefix)
        self._members.clear()
        self._remote.clear()
        self._left.clear()
        written = []
        for kv in kvs:
            event = Event("put", kv.key, kv.value, kv.mod_revision)
            self._apply(event, None, initial=True)
            if kv.key[len(self._etcd.prefix):].partition("/")[0] in ("plans", "budgets"):
                written.append(event)
        return revision + 1, tuple(written)

    def handle(self, message: PeerEvents | PeerConnection) -> PeerUpdate:
        """Fold etcd's changes into the view; what the fabric applies besides."""
        if isinstance(message, PeerConnection):
            if message.kind not in ("etcd-back", "lease-renewed"):
                return PeerUpdate()
            try:
                self._refresh()
            except EtcdUnavailable:
                return PeerUpdate(resynced=True)
            return PeerUpdate(resynced=True, check_slots=message.kind == "lease-renewed")
        collected = _Collected()
        for event in message.events:
            self._apply(event, collected)
        return PeerUpdate(routes=collected.routes, plans=tuple(collected.plans),
                          budgets=tuple(collected.budgets), freed=tuple(collected.freed))

    def _apply(self, event: Event, out: _Collected | None, initial: bool = False) -> None:
        """Fold one etcd change into the view; plan, budget and slot changes go to ``out``."""
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
                if out is not None:
                    out.routes = True
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
                    if out is not None:
                        out.routes = True
            elif self._remote.pop(name, None) is not None and out is not None:
                out.routes = True
        elif out is None or initial:
            return
        elif kind == "slots" and not put:
            out.freed.append(name.partition("/")[0])
        elif kind == "plans":
            plan = from_wire(orjson.loads(event.value)) if put else None
            if put and not isinstance(plan, Plan):
                return
            if isinstance(plan, Plan):
                self._prefetch(plan.digest)  # a copy here survives the publisher's death
            out.plans.append((name, plan))
        elif kind == "budgets" and put:
            budget = from_wire(orjson.loads(event.value))
            if isinstance(budget, Budget):
                out.budgets.append(budget)

    # -- sharing ---------------------------------------------------------------------------

    def publish(self, info: InstanceInfo) -> None:
        """Share an instance with the other members when a routing or status fact changed.

        Resource samples (cpu, rss) alone are not written: every instance would write etcd
        every sample interval. The other members see the samples of the last real change.
        """
        facts = (info.state, info.url, info.pid, info.restarts, info.digest, info.ready_at,
                 info.serving)
        if info.state != InstanceState.STOPPED and self._shared.get(info.id) == facts:
            return
        if info.state == InstanceState.STOPPED:
            self._shared.pop(info.id, None)
        else:
            self._shared[info.id] = facts
        url = info.url
        if url and self._advertise not in ("127.0.0.1", "localhost"):
            url = url.replace("://127.0.0.1:", f"://{self._advertise}:", 1)
        with contextlib.suppress(EtcdUnavailable):
            self._etcd.put_instance(dataclasses.replace(info, url=url))

    # -- views -----------------------------------------------------------------------------

    def instances(self) -> list[InstanceInfo]:
        """The other members' instances."""
        return list(self._remote.values())

    def nodes(self, local: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """Every member's live nodes, and the nodes gone: ``down`` (left) or ``lost``."""
        live = dict(local)
        live.update((n, "up") for n in self._members if n not in live)
        gone = {n: ("down" if n in self._left else "lost")
                for n in sorted(self._seen_nodes) if n not in live}
        return live, gone

    def describe(self) -> dict[str, Any]:
        """The member, its etcd connection and how many remote instances it sees."""
        return {"member": self._etcd.member, "etcd": self._etcd.connected,
                "remote_instances": len(self._remote)}

    def store_doc(self) -> dict[str, Any]:
        """The status document's ``fabric`` entry."""
        return {"store": "etcd", "member": self._etcd.member,
                "etcd": "connected" if self._etcd.connected else "unreachable"}


@dataclasses.dataclass(slots=True)
class _Collected:
    """What one batch of etcd events changed besides the view."""

    routes: bool = False
    plans: list[tuple[str, Plan | None]] = dataclasses.field(default_factory=list)
    budgets: list[Budget] = dataclasses.field(default_factory=list)
    freed: list[str] = dataclasses.field(default_factory=list)


def start_cluster_fabric(names: Names, store: EtcdStore, nodes: tuple[str, ...],
                         digest_known: Callable[[str], bool] = lambda _d: True, *,
                         parallel: int = 1, advertise_host: str = "127.0.0.1",
                         prefetch: Callable[[str], None] | None = None,
                         history_keep: int = DEFAULT_KEEP,
                         down_after: float = SCALE_DOWN_AFTER) -> pykka.ActorRef[Any]:
    """Start a member's fabric: the ordinary :class:`Fabric` with its etcd parts.

    Each call builds fresh collaborators (a restarted fabric re-reads etcd; the store itself
    belongs to the member and stays open). Arguments as :class:`Fabric` and :class:`EtcdPeers`.
    """
    return Fabric.start(names, lambda: SharedStore(store), nodes, digest_known,
                        parallel=parallel, slots=LocalSlots(), drains=EtcdScale(store),
                        peers=EtcdPeers(store, nodes, advertise_host, prefetch),
                        rollouts=Rollouts(lambda: EtcdHistory(store.client, store.prefix),
                                          history_keep),
                        switches=EtcdSwitches(store.client, store.prefix), down_after=down_after)
