"""The fabric with its etcd parts, on a real etcd: the same actor as on one machine.

Two members' fabrics share one etcd (no agents: the capacities an agent would tell are told
directly). One of them is elected placer and places many instances per node over both
members' nodes, never over capacity; a wake and the edges' loads from either member are
decided once; a drain is durable in etcd; ``[rollout] parallel`` holds mesh-wide; and when the
placer goes, the other takes over without moving anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pykka
import pytest
from etcd_helpers import EtcdServer, wait_for

from mycelium.fabric.cluster import start_cluster_fabric
from mycelium.fabric.errors import BadPlan
from mycelium.fabric.etcd import EtcdStore, connect
from mycelium.fabric.names import Names
from mycelium.fabric.scale_hooks import DrainRefused
from mycelium.fabric.switch import ClaimSwitch, ReleaseSwitch
from mycelium.messages import (
    AppLoad,
    ClaimSlot,
    DrainNode,
    EdgeLoad,
    GetStatus,
    InstanceInfo,
    NodeCapacity,
    PublishPlan,
    RegisterEndpoint,
    SetBudget,
    SlotReply,
    WakeApp,
)
from mycelium.states import InstanceState

DIGEST = "a" * 64
Fabrics = dict[str, tuple[pykka.ActorRef[Any], EtcdStore]]


def _member(etcd: EtcdServer, name: str) -> tuple[pykka.ActorRef[Any], EtcdStore]:
    store = connect(etcd.url, name, f"home-{name}", ttl=2.0)
    nodes = (f"{name}-1", f"{name}-2")
    store.join(nodes, spore_url=f"http://{name}.invalid")
    ref = start_cluster_fabric(Names(), store, nodes, parallel=2)
    for node in nodes:  # what each node's agent tells its fabric first
        ref.tell(NodeCapacity(node, 0.25, 1000))
    return ref, store


@pytest.fixture
def fabrics(etcd: EtcdServer) -> Iterator[Fabrics]:
    members = {name: _member(etcd, name) for name in ("a", "b")}
    try:
        yield members
    finally:
        for ref, store in members.values():
            if ref.is_alive():
                ref.stop()
            store.close()


def _placed(etcd: EtcdServer, app: str) -> dict[str, int]:
    kv = etcd.client().get(f"/mycelium/scale/placement/{app}")
    return dict(orjson.loads(kv.value)["counts"]) if kv is not None else {}


def _leader(etcd: EtcdServer) -> str:
    kv = etcd.client().get("/mycelium/scale/leader")
    return kv.value.decode() if kv is not None else ""


def _granted(ref: pykka.ActorRef[Any], app: str, node: str) -> bool:
    reply = ref.ask(ClaimSlot(app, node))
    return isinstance(reply, SlotReply) and reply.granted


@pytest.mark.timeout(40)
def test_one_placer_places_many_per_node_over_every_member_within_capacity(
        etcd: EtcdServer, fabrics: Fabrics) -> None:
    a, b = fabrics["a"][0], fabrics["b"][0]
    assert _leader(etcd) in ("a", "b")
    budget = SetBudget("web", 6, 0.1, 10)
    b.ask(PublishPlan(app="web", digest=DIGEST, min=6, max=6, timeout=10.0, budget=budget))
    # spread first (one on each of the 4 nodes), then the first nodes take a second
    wait_for(lambda: _placed(etcd, "web") == {"a-1": 2, "a-2": 2, "b-1": 1, "b-2": 1}, 10,
             "6 instances over both members' nodes")
    # each member grants its own nodes' claims once its watch brought the counts
    wait_for(lambda: _granted(a, "web", "a-1") and _granted(b, "web", "b-2"), 10, "grants")
    doc = wait_for(lambda: (d := a.ask(GetStatus("web")))["apps"][0].get("desired") == 6 and d,
                   10, "desired 6 through either member")
    reserved = {n["name"]: n["cpu"]["reserved"] for n in doc["nodes"]}
    assert reserved == pytest.approx({"a-1": 0.2, "a-2": 0.2, "b-1": 0.1, "b-2": 0.1})

    # 10 wanted, room for 8 (0.25 cores per node, 0.1 each): never over capacity
    a.ask(PublishPlan(app="web", digest=DIGEST, min=10, max=10, timeout=10.0,
                      budget=SetBudget("web", 10, 0.1, 10)))
    wait_for(lambda: _placed(etcd, "web") == {"a-1": 2, "a-2": 2, "b-1": 2, "b-2": 2}, 10,
             "8 of 10: every node full")

    # drains: through any member, for any member's node; durable in etcd; bad input refused
    with pytest.raises(BadPlan, match="unknown node 'z-9'"):
        a.ask(DrainNode("z-9"))
    reply = a.ask(DrainNode("b-1"))
    assert reply["changed"] is True
    assert etcd.client().get("/mycelium/scale/drains/b-1") is not None
    # no agent makes a replacement Ready, and there is no room: b-1 keeps its 2, stuck
    doc = wait_for(lambda: (d := b.ask(GetStatus(None))) and any(
        n["name"] == "b-1" and n.get("stuck") for n in d["nodes"]) and d, 10, "b-1 stuck")
    assert _placed(etcd, "web")["b-1"] == 2
    # the last open node while it runs apps: refused (exit 1), nothing changed
    b.tell(RegisterEndpoint(InstanceInfo("web@b-2#1", "web", "b-2", DIGEST,
                                         InstanceState.READY, "web@b-2", url="http://x:1")))
    wait_for(lambda: any(i["node"] == "b-2" for i in a.ask(GetStatus("web"))["apps"][0][
        "instances"]), 10, "a sees b-2's instance")
    for node in ("a-1", "a-2"):
        b.ask(DrainNode(node))
    with pytest.raises(DrainRefused, match="cannot drain b-2: no other open node for web"):
        a.ask(DrainNode("b-2"))
    assert etcd.client().get("/mycelium/scale/drains/b-2") is None
    for node in ("a-1", "a-2", "b-1"):
        b.ask(DrainNode(node, undrain=True))
    assert not etcd.client().get_prefix("/mycelium/scale/drains/")[0]


@pytest.mark.timeout(40)
def test_wakes_and_loads_from_every_member_are_decided_once_and_the_placer_hands_over(
        etcd: EtcdServer, fabrics: Fabrics) -> None:
    a, b = fabrics["a"][0], fabrics["b"][0]
    a.ask(PublishPlan(app="lazy", digest=DIGEST, min=0, max=4, timeout=10.0, idle=60.0,
                      budget=SetBudget("lazy", 4, 0.05, 10)))
    a.ask(PublishPlan(app="busy", digest=DIGEST, min=1, max=4, timeout=10.0,
                      target_concurrency=5.0, budget=SetBudget("busy", 4, 0.05, 10)))
    wait_for(lambda: b.ask(GetStatus("lazy"))["apps"], 10, "b sees the plan")
    assert b.ask(GetStatus("lazy"))["apps"][0]["state"] == "idle"
    for ref in (a, b, a, b):  # both members' edges hold requests: ONE instance starts
        ref.tell(WakeApp("lazy"))
    wait_for(lambda: sum(_placed(etcd, "lazy").values()) == 1, 10, "one instance woken")
    # each edge has 10 in flight: 20 in flight mesh-wide / 5 → 4
    for ref in (a, b):
        ref.tell(EdgeLoad((AppLoad("busy", 10.0, 40),)))
    wait_for(lambda: sum(_placed(etcd, "busy").values()) == 4, 10, "4 for the summed load")
    reason = wait_for(lambda: (app := b.ask(GetStatus("busy"))["apps"][0]).get(
        "desired") == 4 and app["desired_reason"], 10, "the follower shows the placer's word")
    assert "20.0 in flight" in reason
    # [rollout] parallel = 2 mesh-wide, as before
    assert a.ask(ClaimSwitch("lazy", "a-1")) is True
    assert b.ask(ClaimSwitch("lazy", "b-1")) is True
    assert a.ask(ClaimSwitch("lazy", "a-2")) is False
    a.ask(ReleaseSwitch("lazy", "a-1"))

    assert sum(_placed(etcd, "lazy").values()) == 1  # still the one start
    before = _placed(etcd, "busy")
    leader = _leader(etcd)
    ref, store = fabrics[leader]
    ref.stop()
    store.close()  # a graceful leave: its lease and the placer's key go at once
    other = "b" if leader == "a" else "a"
    wait_for(lambda: _leader(etcd) == other, 10, "the other member to place")
    survivor = fabrics[other][0]
    gone = {f"{leader}-1", f"{leader}-2"}
    # the leaver's nodes are gone: its instances move to the survivor's nodes, the rest stay
    after = wait_for(lambda: (p := _placed(etcd, "busy")) and not set(p) & gone and
                     sum(p.values()) == 4 and p, 10, "re-placed on the survivor")
    for node, n in before.items():
        if node not in gone:
            assert after[node] >= n
    assert survivor.ask(GetStatus("busy"))["apps"][0]["desired"] == 4
    assert sum(_placed(etcd, "lazy").values()) == 1  # the woken app stays awake
