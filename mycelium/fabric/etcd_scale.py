"""The shared side of scaling in etcd: the placer's election and the facts every member shares.

:class:`EtcdScale` is a member's :class:`~.mesh_scale.MeshScale` (and the mesh's durable
:class:`~.scaler.DrainBook`). Key layout under ``<prefix>scale/``::

    leader                 the placing member's id                      (its lease)
    capacity/<node>        {"cpu", "mem"}: what the node offers          (its member's lease)
    load/<member>          {app: [in_flight, requests]}: the edge's last report (lease)
    wake/<app>             {"member", "at"}: an edge holds requests      (lease)
    placement/<app>        {"counts": {node: n}, "desired", "reason"}   (no lease)
    stuck                  {node: [what it cannot shed]}                 (no lease)
    drains/<node>          a drained node                                (no lease: durable)

The placer is whoever created ``leader`` (a transaction that compares it absent); every write
of ``placement`` and ``stuck`` compares ``leader`` with this member, so a member that lost the
election (its lease expired while it was cut off) can never overwrite the new placer's
counts. When the placer dies its lease takes ``leader`` away and the others stand again; the
new placer adopts the published counts, so nothing moves. The placement is durable: a mesh
whose members all restart finds its counts (and its drains) again.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mycelium._logger import get_logger
from mycelium.messages import AppLoad

from .etcd import EtcdStore, EtcdUnavailable
from .etcd_client import EtcdClient, Event
from .mesh_scale import MeshChange, Published

__all__ = ["EtcdScale"]

log = get_logger(__name__)


# Off the wire on purpose, like the peers' deliveries: they carry etcd events.
@dataclass(frozen=True, slots=True)
class _ScaleEvents:
    """A batch of changes under ``scale/`` (from the watch thread to the fabric)."""

    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class _ScaleConnection:
    """The member's etcd connection changed (``etcd-back``, ``lease-renewed``…)."""

    kind: str


class EtcdScale:
    """Placement shared through etcd for one member (see the module docstring).

    Args:
        store: The member's joined etcd store (its client, prefix, member id and lease).
    """

    def __init__(self, store: EtcdStore) -> None:
        self._store = store
        self.member = store.member
        self._base = store.prefix + "scale/"
        self._leader = ""
        self._capacity: dict[str, tuple[float, int]] = {}
        self._own_capacity: dict[str, tuple[float, int]] = {}
        self._loads: dict[str, dict[str, tuple[float, int]]] = {}
        self._load_body: bytes | None = None
        self._wakes: dict[str, float] = {}
        self._placement: dict[str, Published] = {}
        self._stuck: dict[str, list[str]] = {}
        self._drained: set[str] = set()
        self._watch_stop = threading.Event()

    @property
    def _client(self) -> EtcdClient:
        return self._store.client

    # -- the DrainBook -----------------------------------------------------------------------

    def load(self) -> list[str]:
        """The drained nodes in etcd ([] while etcd is away; the watch brings them later)."""
        with contextlib.suppress(EtcdUnavailable):
            kvs = self._client.get_prefix(self._base + "drains/")[0]
            self._drained = {kv.key.rsplit("/", 1)[1] for kv in kvs}
        return sorted(self._drained)

    def save(self, nodes: list[str]) -> None:
        """Write the drains that changed (one key per node: two members draining two nodes
        at once never undo each other).

        Raises:
            EtcdUnavailable: etcd is away (the drain is not durable, so it is refused).
        """
        new = set(nodes)
        ops = [EtcdClient.put_op(f"{self._base}drains/{n}", b"1")
               for n in sorted(new - self._drained)]
        ops += [EtcdClient.delete_op(f"{self._base}drains/{n}")
                for n in sorted(self._drained - new)]
        if ops:
            self._client.txn([], ops)
        self._drained = new

    def drained(self) -> list[str]:
        """The drained nodes as last seen (kept current by the watch)."""
        return sorted(self._drained)

    # -- following -------------------------------------------------------------------------

    def start(self, tell: Callable[[Any], None]) -> None:
        """Read every shared fact, stand for placer, then follow ``scale/``."""
        revision = 0
        try:
            kvs, revision = self._client.get_prefix(self._base)
            for kv in kvs:
                self._apply(Event("put", kv.key, kv.value, kv.mod_revision), MeshChange())
            self._campaign()
        except EtcdUnavailable as exc:
            log.warning("fabric: shared placement unreadable at start (%s)", exc)
        self._store.on_event(lambda kind: tell(_ScaleConnection(kind)))
        self._store.watch(lambda events: tell(_ScaleEvents(tuple(events))),
                          stop=self._watch_stop, start_revision=revision + 1 if revision else 0,
                          under="scale/")

    def stop(self) -> None:
        """Stop following etcd (the member's lease, and so a placer's key, stays)."""
        self._watch_stop.set()

    def owns(self, message: Any) -> bool:
        """Whether the message is one of this class's deliveries."""
        return isinstance(message, (_ScaleEvents, _ScaleConnection))

    def handle(self, message: Any) -> MeshChange:
        """Fold one delivery into the view; stand for placer when nobody places."""
        change = MeshChange()
        was = self.leader()
        try:
            if isinstance(message, _ScaleConnection):
                if message.kind in ("etcd-back", "lease-renewed"):
                    self._republish()
                    self._refresh(change)
                    self._campaign()
            elif isinstance(message, _ScaleEvents):
                for event in message.events:
                    self._apply(event, change)
                if not self._leader:
                    self._campaign()
        except EtcdUnavailable as exc:
            log.info("fabric: shared placement: etcd away (%s)", exc)
        change.became_leader = self.leader() and not was
        return change

    def _refresh(self, change: MeshChange) -> None:
        kvs = self._client.get_prefix(self._base)[0]
        self._capacity = dict(self._own_capacity)
        self._placement.clear()
        self._drained.clear()
        self._loads = {self.member: self._loads.get(self.member, {})}
        self._leader = ""
        for kv in kvs:
            self._apply(Event("put", kv.key, kv.value, kv.mod_revision), change)
        change.capacity = change.placement = change.drains = True

    def _apply(self, event: Event, change: MeshChange) -> None:
        kind, _, name = event.key[len(self._base):].partition("/")
        put = event.kind == "put"
        if kind == "leader":
            self._leader = event.value.decode() if put else ""
        elif kind == "capacity":
            if put:
                doc = orjson.loads(event.value)
                self._capacity[name] = (float(doc["cpu"]), int(doc["mem"]))
            elif name not in self._own_capacity:
                self._capacity.pop(name, None)
            change.capacity = True
        elif kind == "load" and name != self.member:
            new = ({app: (float(v[0]), int(v[1])) for app, v in orjson.loads(
                event.value).items()} if put else {})
            old = self._loads.get(name, {})
            self._loads[name] = new
            for app in sorted(set(new) | set(old)):
                if new.get(app) != old.get(app):
                    change.loads.append(AppLoad(app, self._sum(app), new.get(app, (0, 0))[1]))
        elif kind == "wake" and put:
            self._wakes[name] = float(orjson.loads(event.value).get("at", time.time()))
            change.wakes.append(name)
        elif kind == "placement":
            if put:
                doc = orjson.loads(event.value)
                self._placement[name] = Published(
                    {str(n): int(c) for n, c in doc["counts"].items()}, int(doc["desired"]),
                    str(doc.get("reason", "")))
            else:
                self._placement.pop(name, None)
            change.placement = True
        elif kind == "drains":
            (self._drained.add if put else self._drained.discard)(name)
            change.drains = True
        elif kind == "stuck":
            self._stuck = ({str(n): [str(s) for s in v] for n, v in orjson.loads(
                event.value).items()} if put else {})

    def _campaign(self) -> None:
        """Become the placer if nobody is (a transaction that compares ``leader`` absent)."""
        key = self._base + "leader"
        reply = self._client.txn([EtcdClient.absent(key)],
                                 [EtcdClient.put_op(key, self.member.encode(),
                                                    self._store.lease)])
        if reply.get("succeeded"):
            self._leader = self.member
            log.info("fabric: %s places the mesh's instances now", self.member)
            return
        kv = self._client.get(key)
        self._leader = kv.value.decode() if kv is not None else ""

    def _republish(self) -> None:
        """Write this member's leased facts again (a new lease lost the old ones)."""
        lease = self._store.lease
        ops = [EtcdClient.put_op(f"{self._base}capacity/{n}", orjson.dumps(
            {"cpu": c, "mem": m}), lease) for n, (c, m) in self._own_capacity.items()]
        if self._load_body is not None:
            ops.append(EtcdClient.put_op(f"{self._base}load/{self.member}", self._load_body,
                                         lease))
        if ops:
            self._client.txn([], ops)

    # -- the shared facts ------------------------------------------------------------------

    def leader(self) -> bool:
        """Whether this member places now."""
        return self._leader == self.member

    def capacity(self) -> Mapping[str, tuple[float, int]]:
        """Every live node's capacity (a dead member's nodes leave with its lease)."""
        return dict(self._capacity)

    def publish_capacity(self, node: str, cpu: float, mem: int) -> None:
        """Share a local node's capacity under the member's lease."""
        self._own_capacity[node] = self._capacity[node] = (cpu, mem)
        with contextlib.suppress(EtcdUnavailable):
            self._client.put(f"{self._base}capacity/{node}",
                             orjson.dumps({"cpu": cpu, "mem": mem}), self._store.lease)

    def _sum(self, app: str) -> float:
        return round(sum(m.get(app, (0.0, 0))[0] for m in self._loads.values()), 3)

    def publish_load(self, loads: Iterable[AppLoad]) -> list[AppLoad]:
        """Share this edge's report; each app's in-flight summed over every member's edge."""
        mine = self._loads.setdefault(self.member, {})
        reported = list(loads)
        for load in reported:
            if load.in_flight or load.requests:
                mine[load.app] = (load.in_flight, load.requests)
            else:
                mine.pop(load.app, None)
        body = orjson.dumps({app: list(v) for app, v in sorted(mine.items())})
        if body != self._load_body:
            self._load_body = body
            with contextlib.suppress(EtcdUnavailable):
                self._client.put(f"{self._base}load/{self.member}", body, self._store.lease)
        return [AppLoad(load.app, self._sum(load.app), load.requests) for load in reported]

    def wake(self, app: str) -> None:
        """Ask the placer to wake ``app`` (a put it watches; a repeat wakes nothing twice)."""
        now = time.time()
        self._wakes[app] = now
        with contextlib.suppress(EtcdUnavailable):
            self._client.put(f"{self._base}wake/{app}", orjson.dumps(
                {"member": self.member, "at": now}), self._store.lease)

    def recent_wakes(self, within: float) -> list[str]:
        """Apps some edge asked to wake in the last ``within`` seconds."""
        since = time.time() - within
        return sorted(app for app, at in self._wakes.items() if at >= since)

    def placement(self) -> Mapping[str, Published]:
        """Every app's published counts."""
        return dict(self._placement)

    def publish(self, app: str, placed: Published | None) -> bool:
        """Write one app's counts, only while this member is the placer."""
        key = f"{self._base}placement/{app}"
        op = (EtcdClient.delete_op(key) if placed is None else EtcdClient.put_op(
            key, orjson.dumps({"counts": dict(sorted(placed.counts.items())),
                               "desired": placed.desired, "reason": placed.reason})))
        try:
            reply = self._client.txn([EtcdClient.value_is(self._base + "leader",
                                                          self.member.encode())], [op])
        except EtcdUnavailable:
            return False
        if not reply.get("succeeded"):
            return False
        if placed is None:
            self._placement.pop(app, None)
        else:
            self._placement[app] = placed
        return True

    def stuck(self) -> Mapping[str, list[str]]:
        """What draining nodes cannot shed, as the placer last published it."""
        return dict(self._stuck)

    def publish_stuck(self, stuck: Mapping[str, list[str]]) -> None:
        """Publish what draining nodes cannot shed (only if it changed; the placer only)."""
        doc = {n: list(v) for n, v in sorted(stuck.items()) if v}
        if doc == self._stuck:
            return
        with contextlib.suppress(EtcdUnavailable):
            reply = self._client.txn(
                [EtcdClient.value_is(self._base + "leader", self.member.encode())],
                [EtcdClient.put_op(self._base + "stuck", orjson.dumps(doc))])
            if reply.get("succeeded"):
                self._stuck = doc
