"""Route pushes to edge workers, timed and tracked without processes: versions and a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mycelium.edge.pushclock import PushClock

A, B = "http://127.0.0.1:1", "http://127.0.0.1:2"


def test_a_push_is_timed_once_every_worker_serves_it_and_a_removed_url_is_routed_until_then():
    clock = PushClock()
    clock.sent(1, 10.0, frozenset({A, B}))
    clock.served(1, 10.002)
    clock.sent(2, 11.0, frozenset({B}))  # A removed
    assert clock.may_route(A)  # some worker still serves version 1
    clock.sent(3, 11.001, frozenset({B}))
    clock.served(3, 11.004)  # the slowest worker skipped to 3: 2 and 3 are both served
    assert not clock.may_route(A) and clock.may_route(B)
    assert [round(s, 3) for s in clock.seconds()] == [0.002, 0.004, 0.003]


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=40))
def test_a_url_is_never_reported_unrouted_while_a_pending_snapshot_routes_to_it(steps):
    clock, version, served, tables = PushClock(kept=10), 0, 0, {0: frozenset()}
    for push, with_a in steps:
        if push:
            version += 1
            tables[version] = frozenset({A} if with_a else {B})
            clock.sent(version, float(version), tables[version])
        else:
            served = version
            clock.served(served, float(version) + 0.5)
        routed = any(A in tables[v] for v in range(served, version + 1))
        assert clock.may_route(A) == routed
        assert all(s >= 0 for s in clock.seconds()) and len(clock.seconds()) <= 10
