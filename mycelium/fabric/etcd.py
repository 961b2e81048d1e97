"""The fabric's state in etcd: plans, budgets, slots, nodes and endpoints.

:class:`EtcdStore` implements the :class:`~mycelium.fabric.state.Store` interface (plans and
budgets, no lease: they outlive every member) and adds what a mesh of several members needs:

- **a member lease** (TTL default 5 s) kept alive by a thread; the member's nodes, endpoints and
  slot claims are written under it, so a dead or cut-off member loses them all when it expires;
- **atomic slot claims**: slot ``k`` of an app (``0 <= k < limit``) is the key
  ``slots/<app>/<k>``, created only by a transaction that compares it absent, so
  ``max_instances`` holds across members without any lock of ours;
- **watches** (:meth:`watch`) that resume from the last revision seen when etcd comes back;
- **clean-up on return** (:meth:`join`): a member that comes back deletes what its previous life
  left (same member id) before it serves.

Key layout under ``prefix`` (default ``/mycelium/``)::

    plans/<app>  budgets/<app>             wire JSON, no lease
    members/<member>                       {member, home_id, spore_url, nodes, lease}  (lease)
    nodes/<node>                           {node, member, home_id, lease}              (lease)
    endpoints/<instance id>                InstanceInfo wire                           (lease)
    slots/<app>/<k>                        node name                                   (lease)
    left/<node>                            a node whose member left gracefully (no lease)
    scale/…                                the shared placement (:mod:`.etcd_scale`)

``slots/`` keys are what a member that claims per node would hold; a member's fabric places
through the elected placer instead (:mod:`.etcd_scale`), and a returning member still cleans
up the slot keys an older life left.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from mycelium._logger import get_logger
from mycelium.messages import Budget, InstanceInfo, Plan, from_wire, to_wire
from mycelium.states import InstanceState

from .errors import FabricError
from .etcd_client import EtcdClient, EtcdUnavailable, Event, parse_endpoints
from .state import StoredState

__all__ = ["DEFAULT_TTL", "EtcdStore", "EtcdUnavailable", "MemberConflict", "connect"]

log = get_logger(__name__)

DEFAULT_TTL = 5.0
"""Seconds a member's lease outlives its last keep-alive (the documented default, 5 s)."""


class MemberConflict(FabricError):
    """A node name this member wants is held by another live member."""


def connect(spec: str, member: str, home_id: str, *, ttl: float = DEFAULT_TTL,
            prefix: str = "/mycelium/", timeout: float = 2.0, tls: ssl.SSLContext | None = None,
            user: str | None = None, password: str | None = None) -> EtcdStore:
    """Open an :class:`EtcdStore` on ``etcd[s]://HOST:PORT[,…]`` and check that etcd answers.

    ``tls``, ``user`` and ``password`` go to the :class:`EtcdClient` (see
    :mod:`mycelium.fabric.access`).

    Raises:
        ValueError: a malformed ``spec``.
        EtcdAuthFailed: etcd refused the user or password.
        EtcdUnavailable: no endpoint answered.
    """
    client = EtcdClient(parse_endpoints(spec), timeout=timeout, tls=tls, user=user,
                        password=password)
    client.status()
    return EtcdStore(client, member, home_id, ttl=ttl, prefix=prefix)


class EtcdStore:
    """Control-plane state in etcd, for one member of a mesh.

    Args:
        client: The etcd client.
        member: This member's id (its node prefix; node names are ``<member>-N``).
        home_id: Tells this member's own previous life from another machine using the same id.
        ttl: The member lease's time to live, in seconds.
        prefix: The key prefix of this mesh in etcd.
    """

    def __init__(self, client: EtcdClient, member: str, home_id: str, *,
                 ttl: float = DEFAULT_TTL, prefix: str = "/mycelium/") -> None:
        self.client = client
        self.member = member
        self.home_id = home_id
        self.ttl = ttl
        self.prefix = prefix
        self.lease = 0
        self.connected = True
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._nodes: tuple[str, ...] = ()
        self._spore_url = ""
        self._endpoints: dict[str, bytes] = {}
        self._slots: dict[str, str] = {}  # slot key → node
        self._releases: set[tuple[str, str]] = set()  # (app, node) released while etcd was away
        self._listeners: list[Callable[[str], None]] = []

    # -- the Store interface -----------------------------------------------------------------

    def load(self) -> StoredState:
        """Every plan and budget in the mesh."""
        plans: dict[str, Plan] = {}
        budgets: dict[str, Budget] = {}
        for kv in self.client.get_prefix(self.prefix + "plans/")[0]:
            plans[kv.key.rsplit("/", 1)[1]] = from_wire(orjson.loads(kv.value))
        for kv in self.client.get_prefix(self.prefix + "budgets/")[0]:
            budgets[kv.key.rsplit("/", 1)[1]] = from_wire(orjson.loads(kv.value))
        return StoredState(plans, budgets)

    def save(self, plan: Plan | None, budget: Budget | None) -> None:
        """Write a plan and/or a budget in one etcd transaction."""
        ops = []
        if plan is not None:
            ops.append(EtcdClient.put_op(f"{self.prefix}plans/{plan.app}",
                                         orjson.dumps(to_wire(plan))))
        if budget is not None:
            ops.append(EtcdClient.put_op(f"{self.prefix}budgets/{budget.app}",
                                         orjson.dumps(to_wire(budget))))
        if ops:
            self.client.txn([], ops)

    def delete(self, app: str) -> None:
        """Forget an app's plan (its budget stays)."""
        self.client.delete(f"{self.prefix}plans/{app}")

    def save_batch(self, writes: Sequence[tuple[Plan, Budget | None]], deletes: Sequence[str],
                   expect: Mapping[str, Plan | None]) -> bool:
        """Write and delete plans in ONE transaction that compares, in etcd, every expected
        plan with what this member last saw of it (absent, or the same bytes).

        This is what keeps two applies through two members from both landing: each checked
        its member's view, and etcd refuses the one whose view was stale.

        Returns:
            False (and nothing written) when an expected plan changed in etcd.
        """
        compare = [EtcdClient.absent(f"{self.prefix}plans/{app}") if plan is None else
                   EtcdClient.value_is(f"{self.prefix}plans/{app}", orjson.dumps(to_wire(plan)))
                   for app, plan in sorted(expect.items())]
        ops = []
        for plan, budget in writes:
            ops.append(EtcdClient.put_op(f"{self.prefix}plans/{plan.app}",
                                         orjson.dumps(to_wire(plan))))
            if budget is not None:
                ops.append(EtcdClient.put_op(f"{self.prefix}budgets/{budget.app}",
                                             orjson.dumps(to_wire(budget))))
        ops += [EtcdClient.delete_op(f"{self.prefix}plans/{app}") for app in deletes]
        reply = self.client.txn(compare, ops)
        return bool(reply.get("succeeded"))

    def close(self) -> None:
        """Stop keeping the lease alive and revoke it: this member's keys leave at once."""
        self._stop.set()
        self.client.abort_watches()
        if self._keeper is not None:
            self._keeper.join(self.client.timeout + 1.0)
            self._keeper = None
        with self._lock:
            lease, self.lease = self.lease, 0
        if lease:
            with contextlib.suppress(EtcdUnavailable):
                if self._nodes:  # a graceful leave: the others show these nodes `down`
                    self.client.txn([], [EtcdClient.put_op(f"{self.prefix}left/{n}", b"1")
                                         for n in self._nodes])
                self.client.lease_revoke(lease)

    # -- membership --------------------------------------------------------------------------

    def join(self, nodes: Iterable[str], spore_url: str = "") -> None:
        """Take the lease, clean up a previous life, claim the node names, keep the lease alive.

        Raises:
            MemberConflict: a node name is held by another live member.
            EtcdUnavailable: etcd did not answer.
        """
        self._nodes = tuple(nodes)
        self._spore_url = spore_url
        for node in self._nodes:
            kv = self.client.get(f"{self.prefix}nodes/{node}")
            if kv is None:
                continue
            held = orjson.loads(kv.value)
            if held.get("home_id") != self.home_id:
                raise MemberConflict(
                    f"node name {node!r} is already used by member {held.get('member')!r} "
                    f"(another home); choose another --node-prefix")
            with contextlib.suppress(EtcdUnavailable):
                self.client.lease_revoke(int(held.get("lease", 0)))
        self.cleanup(self._nodes)
        self._register()
        self._keeper = threading.Thread(target=self._keep_alive, name="etcd-lease", daemon=True)
        self._keeper.start()

    def cleanup(self, nodes: Iterable[str]) -> int:
        """Delete endpoints and slots held by ``nodes`` (a previous life's leftovers)."""
        mine = set(nodes)
        gone = 0
        for node in mine:
            self.client.delete(f"{self.prefix}left/{node}")
        for kv in self.client.get_prefix(self.prefix + "endpoints/")[0]:
            with contextlib.suppress(ValueError):
                if orjson.loads(kv.value).get("node") in mine:
                    self.client.delete(kv.key)
                    gone += 1
        for kv in self.client.get_prefix(self.prefix + "slots/")[0]:
            if kv.value.decode() in mine:
                self.client.txn([EtcdClient.value_is(kv.key, kv.value)],
                                [EtcdClient.delete_op(kv.key)])
                gone += 1
        return gone

    def _register(self) -> None:
        """Grant a fresh lease and (re)write everything this member holds under it."""
        lease = self.client.lease_grant(self.ttl)
        with self._lock:
            self.lease = lease
            ops = [EtcdClient.put_op(f"{self.prefix}members/{self.member}", orjson.dumps({
                "member": self.member, "home_id": self.home_id, "spore_url": self._spore_url,
                "nodes": list(self._nodes), "lease": lease}), lease)]
            ops += [EtcdClient.put_op(f"{self.prefix}nodes/{n}", orjson.dumps({
                "node": n, "member": self.member, "home_id": self.home_id, "lease": lease}),
                lease) for n in self._nodes]
            ops += [EtcdClient.put_op(f"{self.prefix}endpoints/{iid}", body, lease)
                    for iid, body in self._endpoints.items()]
            slots = dict(self._slots)
        self.client.txn([], ops)
        for key, node in slots.items():  # a slot taken meanwhile by another member is lost
            reply = self.client.txn([EtcdClient.absent(key)],
                                    [EtcdClient.put_op(key, node.encode(), lease)])
            if not reply.get("succeeded"):
                with self._lock:
                    self._slots.pop(key, None)

    def _keep_alive(self) -> None:
        interval = max(0.2, self.ttl / 3.0)
        while not self._stop.wait(interval):
            try:
                with self._lock:
                    lease = self.lease
                alive = self.client.lease_keepalive(lease)
                if not alive:
                    log.warning("etcd lease of %s expired; registering again", self.member)
                    self._register()
                    self._emit("lease-renewed")
                if not self.connected:
                    self.connected = True
                    self._republish()
                    self._emit("etcd-back")
            except EtcdUnavailable as exc:
                if self.connected:
                    self.connected = False
                    log.warning("etcd lost: %s; retrying", exc)
                    self._emit("etcd-lost")

    def _republish(self) -> None:
        """Write this member's endpoints again and give back the slots released meanwhile."""
        with self._lock:
            releases = sorted(self._releases)
        for app, node in releases:
            self.release_slot(app, node)
            with self._lock:
                self._releases.discard((app, node))
        mine = set(self._nodes)
        stale = []
        for kv in self.client.get_prefix(self.prefix + "endpoints/")[0]:
            with contextlib.suppress(ValueError):
                if orjson.loads(kv.value).get("node") in mine:
                    stale.append(kv.key)
        with self._lock:
            lease = self.lease
            ops = [EtcdClient.put_op(f"{self.prefix}endpoints/{iid}", body, lease)
                   for iid, body in self._endpoints.items()]
            live = {f"{self.prefix}endpoints/{iid}" for iid in self._endpoints}
        ops += [EtcdClient.delete_op(key) for key in stale if key not in live]
        if ops:
            self.client.txn([], ops)

    def on_event(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(kind)`` on ``etcd-lost``, ``etcd-back`` and ``lease-renewed``."""
        self._listeners.append(listener)

    def _emit(self, kind: str) -> None:
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                listener(kind)

    # -- nodes and members ---------------------------------------------------------------------

    def nodes(self) -> dict[str, str]:
        """Every live node of the mesh → its member."""
        return {kv.key.rsplit("/", 1)[1]: str(orjson.loads(kv.value).get("member"))
                for kv in self.client.get_prefix(self.prefix + "nodes/")[0]}

    def members(self) -> dict[str, dict[str, Any]]:
        """Every live member → its record (``spore_url``, ``nodes``…)."""
        return {kv.key.rsplit("/", 1)[1]: orjson.loads(kv.value)
                for kv in self.client.get_prefix(self.prefix + "members/")[0]}

    def spore_urls(self) -> list[str]:
        """The spore servers of the other live members."""
        return [str(m["spore_url"]) for name, m in self.members().items()
                if name != self.member and m.get("spore_url")]

    # -- endpoints -------------------------------------------------------------------------------

    def put_instance(self, info: InstanceInfo) -> None:
        """Publish (or withdraw, when Stopped) one of this member's instances."""
        key = f"{self.prefix}endpoints/{info.id}"
        if info.state == InstanceState.STOPPED:
            with self._lock:
                self._endpoints.pop(info.id, None)
            if self.connected:  # else: the republish on etcd's return deletes it
                self.client.delete(key)
            return
        body = orjson.dumps(to_wire(info))
        with self._lock:
            if self._endpoints.get(info.id) == body:
                return
            self._endpoints[info.id] = body
            lease = self.lease
        if self.connected:  # else: republished when etcd returns (no 2 s wait per change)
            self.client.put(key, body, lease)

    def instances(self) -> list[InstanceInfo]:
        """Every live instance of the mesh."""
        out = []
        for kv in self.client.get_prefix(self.prefix + "endpoints/")[0]:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                out.append(from_wire(orjson.loads(kv.value)))
        return out

    # -- slots -----------------------------------------------------------------------------------

    def claim_slot(self, app: str, node: str, limit: int) -> bool:
        """Take one of the app's ``limit`` slots for ``node``; atomic across members.

        Raises:
            EtcdUnavailable: etcd is away (no slot is granted without it).
        """
        if not self.connected:
            raise EtcdUnavailable("etcd unreachable: no slot can be claimed now")
        base = f"{self.prefix}slots/{app}/"
        held = {int(kv.key.rsplit("/", 1)[1]): kv.value.decode()
                for kv in self.client.get_prefix(base)[0]}
        for k, who in held.items():
            if who == node and k < limit:
                return True
        for k in range(limit):
            if k in held:
                continue
            key = f"{base}{k}"
            with self._lock:
                lease = self.lease
            reply = self.client.txn([EtcdClient.absent(key)],
                                    [EtcdClient.put_op(key, node.encode(), lease)])
            if reply.get("succeeded"):
                with self._lock:
                    self._slots[key] = node
                return True
        return False

    def release_slot(self, app: str, node: str) -> None:
        """Give back the slots ``node`` holds for ``app`` (when etcd returns, if it is away)."""
        if not self.connected:
            with self._lock:
                self._releases.add((app, node))
                for key in [k for k, n in self._slots.items()
                            if n == node and k.startswith(f"{self.prefix}slots/{app}/")]:
                    del self._slots[key]
            return
        for kv in self.client.get_prefix(f"{self.prefix}slots/{app}/")[0]:
            if kv.value.decode() == node:
                self.client.txn([EtcdClient.value_is(kv.key, kv.value)],
                                [EtcdClient.delete_op(kv.key)])
                with self._lock:
                    self._slots.pop(kv.key, None)

    def slots(self, app: str) -> dict[int, str]:
        """Slot index → holding node, for one app."""
        return {int(kv.key.rsplit("/", 1)[1]): kv.value.decode()
                for kv in self.client.get_prefix(f"{self.prefix}slots/{app}/")[0]}

    # -- watches ---------------------------------------------------------------------------------

    def watch(self, callback: Callable[[list[Event]], None], *, retry: float = 0.5,
              stop: threading.Event | None = None, start_revision: int = 0,
              under: str = "") -> threading.Thread:
        """Follow every change in the mesh (or only under ``prefix + under``) in a thread:
        ``callback(events)`` per batch.

        Starts at ``start_revision`` (0: the current one); after a broken stream it resumes
        where it stopped (retrying every ``retry`` seconds while etcd is away), so no change
        is missed. Ends when ``stop`` (or the store's close) is set.
        """
        ended = stop or threading.Event()

        def run() -> None:
            revision = start_revision
            while not self._stop.is_set() and not ended.is_set():
                try:
                    if revision == 0:
                        revision = self.client.get_prefix(self.prefix + "members/")[1] + 1
                    for batch in self.client.watch_prefix(self.prefix + under, revision, ended):
                        if self._stop.is_set():
                            return
                        if batch:
                            revision = batch[-1].mod_revision + 1
                            callback(batch)
                except EtcdUnavailable as exc:
                    if not self._stop.is_set() and not ended.is_set():
                        log.info("etcd watch interrupted (%s); resuming", exc)
                        ended.wait(retry)
                except Exception:  # a callback bug must not end the watch
                    log.exception("etcd watch callback failed")
                    time.sleep(retry)

        thread = threading.Thread(target=run, name="etcd-watch", daemon=True)
        thread.start()
        return thread
