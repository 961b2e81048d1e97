"""The fabric with its etcd parts, on a real etcd: the same actor as on one machine.

Two members' fabrics share one etcd: slots are bounded across them, ``[rollout] parallel``
reaches the etcd-mode fabric exactly as it reaches the single-machine one, and one member's
plan reaches the other's view through the watch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from etcd_helpers import EtcdServer, wait_for

from mycelium.fabric.cluster import start_cluster_fabric
from mycelium.fabric.etcd import EtcdStore, connect
from mycelium.fabric.names import Names
from mycelium.fabric.switch import ClaimSwitch, ReleaseSwitch
from mycelium.messages import ClaimSlot, GetStatus, PublishPlan, SlotReply

DIGEST = "a" * 64


def _member(etcd: EtcdServer, name: str) -> EtcdStore:
    store = connect(etcd.url, name, f"home-{name}", ttl=5.0)
    store.join([f"{name}-1", f"{name}-2"], spore_url=f"http://{name}.invalid")
    return store


@pytest.fixture
def two_fabrics(etcd: EtcdServer) -> Iterator[tuple[pykka.ActorRef[Any], pykka.ActorRef[Any]]]:
    stores = [_member(etcd, "a"), _member(etcd, "b")]
    refs = [start_cluster_fabric(Names(), s, (f"{s.member}-1", f"{s.member}-2"), parallel=2)
            for s in stores]
    try:
        yield refs[0], refs[1]
    finally:
        for ref in refs:
            ref.stop()
        for s in stores:
            s.close()


@pytest.mark.timeout(30)
def test_two_member_fabrics_share_plans_bound_slots_and_honour_parallel(
        two_fabrics: tuple[pykka.ActorRef[Any], pykka.ActorRef[Any]]) -> None:
    a, b = two_fabrics
    a.ask(PublishPlan(app="web", digest=DIGEST, min=1, max=3, timeout=10.0))
    wait_for(lambda: b.ask(GetStatus("web"))["apps"], 10, "b sees a's plan")
    claims = [(a, "a-1"), (a, "a-2"), (b, "b-1"), (b, "b-2")]
    grants = [ref.ask(ClaimSlot("web", node)) for ref, node in claims]
    assert [g.granted for g in grants if isinstance(g, SlotReply)] == [True, True, True, False]
    # parallel = 2 in etcd mode too: two nodes of one member may switch at once, not three
    assert a.ask(ClaimSwitch("web", "a-1")) is True
    assert a.ask(ClaimSwitch("web", "a-2")) is True
    assert a.ask(ClaimSwitch("web", "x-3")) is False
    # ... and mesh-wide: the other member's node waits too, until one of them releases
    assert b.ask(ClaimSwitch("web", "b-1")) is False
    a.ask(ReleaseSwitch("web", "a-1"))
    assert b.ask(ClaimSwitch("web", "b-1")) is True
    doc = b.ask(GetStatus(None))
    assert doc["fabric"]["store"] == "etcd"
    assert {n["name"] for n in doc["nodes"]} == {"a-1", "a-2", "b-1", "b-2"}
