"""Switch claims and deployment history on a real etcd: the bound holds across members."""

from __future__ import annotations

import threading

from etcd_helpers import EtcdServer

from mycelium.fabric.etcd_switch import EtcdSwitches
from mycelium.fabric.history import Deployment
from mycelium.fabric.history_store import EtcdHistory


def test_parallel_bounds_switches_across_members_sharing_etcd(etcd: EtcdServer) -> None:
    # two members: two clients, two switch tables, one etcd key
    a, b = EtcdSwitches(etcd.client(), "/t/"), EtcdSwitches(etcd.client(), "/t/")
    assert a.claim("web", "m1-1", 1, 100.0, 30.0)
    assert not b.claim("web", "m2-1", 1, 100.0, 30.0)  # the other member sees the holder
    assert a.claim("web", "m1-1", 1, 101.0, 30.0)  # a holder renews
    assert b.claim("web", "m2-1", 2, 101.0, 30.0)  # parallel 2: room for one more
    b.release("web", "m2-1")
    a.release("web", "m1-1")
    assert a.holders("web") == []
    assert b.claim("web", "m2-1", 1, 102.0, 30.0)
    assert a.claim("web", "m1-1", 1, 140.0, 30.0)  # m2-1's lease ran out
    a.forget("web")
    assert b.holders("web") == []


def test_concurrent_claims_through_two_members_grant_at_most_parallel(etcd: EtcdServer) -> None:
    members = [EtcdSwitches(etcd.client(), "/t/") for _ in range(2)]
    granted: list[str] = []
    lock = threading.Lock()

    def claim(k: int) -> None:
        node = f"m{k % 2}-{k}"
        if members[k % 2].claim("web", node, 2, 100.0, 30.0):
            with lock:
                granted.append(node)

    threads = [threading.Thread(target=claim, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(granted) == 2, granted
    assert members[0].holders("web") == sorted(granted)


def test_history_is_shared_by_members(etcd: EtcdServer) -> None:
    one, two = EtcdHistory(etcd.client(), "/t/"), EtcdHistory(etcd.client(), "/t/")
    records = [Deployment(1, "a" * 64, "1.0", 10.0, "me@here", "superseded"),
               Deployment(2, "b" * 64, "2.0", 20.0, "me@here")]
    assert two.load("web") == []
    one.save("web", records)
    assert two.load("web") == records
