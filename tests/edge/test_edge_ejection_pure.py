"""Passive outlier ejection as pure decisions: counts, the panic floor, return times."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mycelium.edge.balancer import Balancer
from mycelium.edge.ejection import EjectionPolicy, Ejector, decide, ejection_cap
from mycelium.edge.routes import Endpoint, Route

POLICY = EjectionPolicy(after=5, base_time=30.0, max_percent=50)


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(f"http://127.0.0.1:{1000 + i}", f"a#{i}") for i in range(n)]


def test_the_cap_is_the_percentage_rounded_down_and_always_keeps_one():
    assert [ejection_cap(n, 50) for n in range(1, 7)] == [0, 1, 1, 2, 2, 3]
    assert [ejection_cap(n, 100) for n in range(1, 5)] == [0, 1, 2, 3]
    assert ejection_cap(10, 0) == 0
    assert ejection_cap(3, 33) == 0  # 0.99 rounds down


def test_decide_counts_consecutive_failures_and_a_success_resets_them():
    assert decide(0, False, 0, 3, POLICY) == (1, False)
    assert decide(3, True, 0, 3, POLICY) == (0, False)
    assert decide(4, False, 0, 3, POLICY) == (0, True)  # the fifth: ejected, count restarts
    assert decide(4, False, 1, 3, POLICY) == (5, False)  # the app's cap is full: it stays


def test_five_failures_eject_for_eject_time_times_n_and_it_returns_after():
    ejector = Ejector(POLICY)
    a = endpoints(3)[0]
    for _ in range(4):
        assert ejector.outcome("a", a, False, 3, now=0.0) is None
    event = ejector.outcome("a", a, False, 3, now=1.0)
    assert event is not None and (event.event, event.instance, event.count, event.seconds) == (
        "endpoint_ejected", "a#0", 1, 30.0)
    assert set(ejector.ejected) == {a.url}
    assert ejector.release(30.9) == []
    (back,) = ejector.release(31.0)
    assert (back.event, back.instance, back.url) == ("endpoint_returned", "a#0", a.url)
    assert set(ejector.ejected) == set()
    for _ in range(5):  # ejected a second time: twice as long
        event = ejector.outcome("a", a, False, 3, now=40.0)
    assert event is not None and (event.count, event.seconds) == (2, 60.0)
    assert ejector.release(99.9) == [] and len(ejector.release(100.0)) == 1


def test_a_success_between_failures_keeps_the_endpoint_in():
    ejector = Ejector(POLICY)
    (a, _, _) = endpoints(3)
    for _ in range(10):
        for _ in range(4):
            assert ejector.outcome("a", a, False, 3, now=0.0) is None
        assert ejector.outcome("a", a, True, 3, now=0.0) is None
    assert not ejector.ejected


def test_the_panic_floor_holds_the_second_bad_endpoint_of_three_until_the_first_returns():
    ejector = Ejector(POLICY)
    a, b, _c = endpoints(3)
    for _ in range(5):
        ejector.outcome("a", a, False, 3, now=0.0)
    for _ in range(7):
        assert ejector.outcome("a", b, False, 3, now=0.0) is None  # 1 of 3 is the cap
    assert set(ejector.ejected) == {a.url}
    ejector.release(30.0)
    event = ejector.outcome("a", b, False, 3, now=30.0)  # over the threshold: out at once
    assert event is not None and event.instance == "a#1"


def test_apps_have_separate_caps_and_a_routed_away_endpoint_is_forgotten():
    ejector = Ejector(POLICY)
    a0, a1 = endpoints(2)
    b0 = Endpoint("http://127.0.0.1:2000", "b#0")
    b1 = Endpoint("http://127.0.0.1:2001", "b#1")
    for _ in range(5):
        ejector.outcome("a", a0, False, 2, now=0.0)
        ejector.outcome("b", b0, False, 2, now=0.0)
    assert set(ejector.ejected) == {a0.url, b0.url}
    assert dict(ejector.out_per_app) == {"a": 1, "b": 1}
    ejector.forget({a1.url, b0.url, b1.url})
    assert set(ejector.ejected) == {b0.url}
    assert dict(ejector.out_per_app) == {"b": 1}


def test_the_balancer_puts_ejected_endpoints_last():
    ejector = Ejector(POLICY)
    eps = endpoints(3)
    balancer = Balancer(ejected=ejector.ejected)
    route = Route("a", tuple(eps))
    for _ in range(5):
        ejector.outcome("a", eps[0], False, 3, now=0.0)
    for _ in range(6):
        assert balancer.order(route)[-1] == eps[0]


outcomes = st.lists(st.tuples(st.integers(0, 7), st.booleans(), st.floats(0, 5)), max_size=300)


@given(total=st.integers(1, 8), percent=st.integers(0, 100), after=st.integers(1, 4),
       steps=outcomes)
def test_never_more_than_the_cap_is_out_and_one_endpoint_always_stays(total, percent, after,
                                                                      steps):
    policy = EjectionPolicy(after=after, base_time=1.0, max_percent=percent)
    ejector = Ejector(policy)
    eps = endpoints(total)
    now = 0.0
    for index, ok, dt in steps:
        now += dt
        ejector.release(now)
        ejector.outcome("a", eps[index % total], ok, total, now)
        out = len(ejector.ejected)
        assert out <= ejection_cap(total, percent)
        assert out < total or total == 0
        assert ejector.out_per_app.get("a", 0) == out


@given(steps=outcomes)
def test_every_ejection_returns_after_eject_time_times_its_count(steps):
    ejector = Ejector(EjectionPolicy(after=2, base_time=1.0, max_percent=100))
    eps = endpoints(4)
    now = 0.0
    due: dict[str, float] = {}
    for index, ok, dt in steps:
        now += dt
        for event in ejector.release(now):
            assert due.pop(event.url) <= now
        assert all(until > now for until in due.values())
        event = ejector.outcome("a", eps[index % 4], ok, 4, now)
        if event is not None:
            assert event.seconds == 1.0 * event.count
            due[event.url] = now + event.seconds
    assert set(ejector.ejected) == set(due)
