"""The etcd store on a real etcd: Store semantics, atomic slots, leases, watches, clean-up."""

from __future__ import annotations

import threading
import time

import pytest
from etcd_helpers import EtcdServer, wait_for

from mycelium.fabric.etcd import EtcdStore, MemberConflict, connect
from mycelium.fabric.etcd_client import EtcdUnavailable, Event, parse_endpoints
from mycelium.messages import Budget, InstanceInfo, Plan

PLAN = Plan(app="hello", digest="a" * 64, min=1, max=2, warmup=0.0, timeout=30.0, generation=3)
BUDGET = Budget(app="hello", max_instances=2, cpu=0.1, mem=64)


def info(iid: str, node: str, state: str = "Ready") -> InstanceInfo:
    return InstanceInfo(id=iid, app="hello", node=node, digest="a" * 64, state=state,
                        child=f"hello@{node}", url="http://127.0.0.1:1")


def member(etcd: EtcdServer, name: str, ttl: float = 2.0, home_id: str | None = None,
           nodes: int = 2) -> EtcdStore:
    store = connect(etcd.url, name, home_id or f"home-{name}", ttl=ttl)
    store.join([f"{name}-{i}" for i in range(1, nodes + 1)], spore_url=f"http://{name}.invalid")
    return store


def test_parse_endpoints() -> None:
    assert parse_endpoints("etcd://a:1,b:2") == (("a", 1), ("b", 2))
    for bad in ("etcd://", "etcd://a", "etcd://a:x"):
        with pytest.raises(ValueError):
            parse_endpoints(bad)


def test_unreachable_etcd_is_one_clear_error() -> None:
    from etcd_helpers import free_port

    with pytest.raises(EtcdUnavailable, match="etcd unreachable"):
        connect(f"etcd://127.0.0.1:{free_port()}", "m", "h", timeout=0.5)


@pytest.mark.timeout(30)
def test_store_roundtrip_and_shared_between_members(etcd: EtcdServer) -> None:
    a, b = member(etcd, "a"), member(etcd, "b")
    try:
        a.save(PLAN, BUDGET)
        state = b.load()
        assert state.plans == {"hello": PLAN} and state.budgets == {"hello": BUDGET}
        b.delete("hello")
        assert a.load().plans == {} and a.load().budgets == {"hello": BUDGET}
        assert a.nodes() == {"a-1": "a", "a-2": "a", "b-1": "b", "b-2": "b"}
        assert a.spore_urls() == ["http://b.invalid"]
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(30)
def test_slot_claims_are_atomic_across_members(etcd: EtcdServer) -> None:
    stores = [member(etcd, f"m{i}", nodes=3) for i in range(4)]
    try:
        granted: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(12)

        def claim(store: EtcdStore, node: str) -> None:
            barrier.wait()
            if store.claim_slot("hello", node, 5):
                with lock:
                    granted.append(node)

        threads = [threading.Thread(target=claim, args=(s, f"{s.member}-{n}"))
                   for s in stores for n in (1, 2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(granted) == 5
        assert sorted(stores[0].slots("hello").values()) == sorted(granted)
        holder = granted[0]
        owner = next(s for s in stores if holder.startswith(s.member + "-"))
        assert owner.claim_slot("hello", holder, 5)  # idempotent
        owner.release_slot("hello", holder)
        assert holder not in stores[0].slots("hello").values()
    finally:
        for s in stores:
            s.close()


@pytest.mark.timeout(30)
def test_lease_expiry_removes_a_dead_members_keys(etcd: EtcdServer) -> None:
    a, b = member(etcd, "a", ttl=1.0), member(etcd, "b", ttl=1.0)
    try:
        a.put_instance(info("hello@a-1#1", "a-1"))
        b.put_instance(info("hello@b-1#1", "b-1"))
        assert a.claim_slot("hello", "a-1", 2)
        assert {i.id for i in b.instances()} == {"hello@a-1#1", "hello@b-1#1"}
        a._stop.set()  # a dies: no more keep-alives, no revoke
        started = time.monotonic()
        wait_for(lambda: {i.id for i in b.instances()} == {"hello@b-1#1"}, 10.0,
                 "the dead member's endpoint to expire")
        assert time.monotonic() - started < 1.0 + 2.5
        assert "a-1" not in b.nodes() and "a" not in b.members()
        assert b.slots("hello") == {}
        assert b.claim_slot("hello", "b-1", 1)
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(30)
def test_returning_member_cleans_up_and_strangers_conflict(etcd: EtcdServer) -> None:
    first = member(etcd, "a", ttl=5.0)
    first.put_instance(info("hello@a-1#1", "a-1"))
    assert first.claim_slot("hello", "a-1", 1)
    first._stop.set()  # kill -9: the keys stay until the lease expires
    with pytest.raises(MemberConflict, match="already used"):
        member(etcd, "a", home_id="another-home")
    again = member(etcd, "a", ttl=5.0)  # same home: its previous life is cleaned up
    try:
        assert again.instances() == []
        assert again.slots("hello") == {}
        assert set(again.nodes()) == {"a-1", "a-2"}
    finally:
        again.close()
        first.client.abort_watches()


@pytest.mark.timeout(30)
def test_watch_sees_changes_and_resumes_after_an_etcd_restart(etcd: EtcdServer) -> None:
    a, b = member(etcd, "a", ttl=2.0), member(etcd, "b", ttl=2.0)
    seen: list[Event] = []
    got = threading.Condition()

    def on_events(events: list[Event]) -> None:
        with got:
            seen.extend(events)
            got.notify_all()

    def saw(key_part: str) -> bool:
        return any(key_part in e.key and e.kind == "put" for e in list(seen))

    lost = threading.Event()
    back = threading.Event()
    a.on_event(lambda kind: (lost if kind == "etcd-lost" else back).set()
               if kind in ("etcd-lost", "etcd-back") else None)
    try:
        a.watch(on_events)
        time.sleep(0)  # the watch takes the current revision before the first save below
        wait_for(lambda: a.client._streams, 5.0, "the watch stream")
        b.save(PLAN, None)
        wait_for(lambda: saw("plans/hello"), 5.0, "the plan in the watch")
        etcd.kill()
        wait_for(lost.is_set, 10.0, "the member to notice etcd is gone")
        etcd.start()
        wait_for(back.is_set, 15.0, "the member to notice etcd is back")
        b.save(None, BUDGET)
        wait_for(lambda: saw("budgets/hello"), 15.0, "the budget after the restart")
        assert set(a.nodes()) >= {"a-1", "a-2"}
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(40)
def test_changes_while_etcd_is_away_are_applied_when_it_returns(etcd: EtcdServer) -> None:
    a = member(etcd, "a", ttl=3.0)
    back = threading.Event()
    a.on_event(lambda kind: back.set() if kind == "etcd-back" else None)
    try:
        a.put_instance(info("hello@a-1#1", "a-1"))
        assert a.claim_slot("hello", "a-1", 1)
        etcd.kill()
        wait_for(lambda: not a.connected, 10.0, "the member to notice etcd is gone")
        with pytest.raises(EtcdUnavailable):
            a.claim_slot("hello", "a-2", 2)
        started = time.monotonic()
        a.put_instance(info("hello@a-1#1", "a-1", "Stopped"))  # none of these may block
        a.put_instance(info("hello@a-2#2", "a-2"))
        a.release_slot("hello", "a-1")
        assert time.monotonic() - started < 0.5
        etcd.start()
        wait_for(back.is_set, 15.0, "etcd-back")
        assert {i.id for i in a.instances()} == {"hello@a-2#2"}
        assert a.slots("hello") == {}
    finally:
        a.close()
