"""The pure cores of the mesh: blue/green steps, validation, desired counts, app states, routes,
the wire format and the store — no threads, no processes."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.fabric import BadPlan, SqliteStore, app_state, desired_count, routes
from mycelium.fabric.slots import LocalSlots
from mycelium.fabric.validate import check_budget, check_plan
from mycelium.messages import (
    Budget,
    Crash,
    InstanceInfo,
    Plan,
    PlanChanged,
    PublishPlan,
    SetBudget,
    from_wire,
    to_wire,
)
from mycelium.node.rollout import ChildView, Fail, Start, Stop, WakeAt, step
from mycelium.states import InstanceState, PlanStatus

BLUE, GREEN = "b" * 64, "e" * 64


def plan(digest: str = GREEN, **kw: object) -> Plan:
    base: dict[str, object] = dict(app="hello", digest=digest, min=1, max=3, warmup=1.0,
                                   timeout=10.0)
    base.update(kw)
    return Plan(**base)  # type: ignore[arg-type]


def test_a_fresh_node_starts_the_plans_digest() -> None:
    assert step(plan(), [], now=100.0) == [Start(GREEN)]


def test_green_starts_beside_blue_and_blue_waits_for_green() -> None:
    blue = ChildView("c-blue", BLUE, "Ready", 0.0, 1.0)
    assert step(plan(), [blue], now=100.0) == [Start(GREEN)]
    green = ChildView("c-green", GREEN, "Launching", 100.0)
    assert step(plan(), [blue, green], now=101.0) == [WakeAt(110.0)]


def test_blue_drains_only_after_the_warmup_beside_a_ready_green() -> None:
    blue = ChildView("c-blue", BLUE, "Ready", 0.0, 1.0)
    green = ChildView("c-green", GREEN, "Ready", 100.0, 102.0)
    assert step(plan(), [blue, green], now=102.5) == [WakeAt(103.0)]
    assert step(plan(), [blue, green], now=103.0) == [Stop("c-blue")]


def test_green_not_ready_in_time_fails_and_stops_green_leaving_blue() -> None:
    blue = ChildView("c-blue", BLUE, "Ready", 0.0, 1.0)
    green = ChildView("c-green", GREEN, "Launching", 100.0)
    actions = step(plan(), [blue, green], now=110.0)
    assert isinstance(actions[0], Fail) and actions[0].digest == GREEN
    assert actions[1:] == [Stop("c-green")]


def test_after_a_rollback_the_other_digest_stops_at_once() -> None:
    back = plan(BLUE, status="failed")
    blue = ChildView("c-blue", BLUE, "Ready", 0.0, 1.0)
    green = ChildView("c-green", GREEN, "Ready", 100.0, 100.5)
    assert step(back, [blue, green], now=100.6) == [Stop("c-green")]


def test_a_green_being_stopped_is_not_started_again_until_it_is_gone() -> None:
    blue = ChildView("c-blue", BLUE, "Ready", 0.0, 1.0)
    failing = ChildView("c-green", GREEN, "Draining", 100.0)
    assert step(plan(), [blue], now=110.1, stopping=[failing]) == []
    assert step(plan(), [blue], now=111.0) == [Start(GREEN)]


def test_a_digest_this_node_failed_is_not_started_again_before_the_rollback() -> None:
    blue = ChildView("c-blue", BLUE, "Ready", 0.0, 1.0)
    assert step(plan(), [blue], now=111.0, failed=True) == []


def test_a_lone_slow_first_instance_is_left_to_its_supervisor() -> None:
    only = ChildView("c", GREEN, "Launching", 0.0)
    assert step(plan(), [only], now=1000.0) == []


@pytest.mark.parametrize(("kw", "reason"), [
    ({"min": 3, "max": 2}, "greater than --max"),
    ({"max": 0}, "--max must be >= 1"),
    ({"min": -1}, "--min must be >= 0"),
    ({"warmup": -1.0}, "--warmup"),
    ({"timeout": 0.0}, "--timeout"),
    ({"app": "Bad_Name"}, "bad app name"),
    ({"digest": "xyz"}, "bad digest"),
])
def test_bad_plans_are_refused_with_a_precise_reason(kw: dict[str, object], reason: str) -> None:
    fields: dict[str, object] = dict(app="hello", digest=GREEN, min=1, max=1)
    fields.update(kw)
    with pytest.raises(BadPlan, match=reason) as info:
        check_plan(PublishPlan(**fields))  # type: ignore[arg-type]
    assert info.value.exit_code == 2


@pytest.mark.parametrize("kw", [{"max_instances": 0}, {"cpu": -0.5}, {"mem": 0}, {"mem": 1.5}])
def test_bad_budgets_are_refused(kw: dict[str, object]) -> None:
    fields: dict[str, object] = dict(app="hello", max_instances=1, cpu=0.1, mem=256)
    fields.update(kw)
    with pytest.raises(BadPlan):
        check_budget(SetBudget(**fields))  # type: ignore[arg-type]


def test_desired_is_the_smallest_of_max_max_instances_and_nodes_that_fit() -> None:
    p = plan()
    assert desired_count(p, Budget("hello", 2, 0.1, 256), nodes=3, declined=0) == 2
    assert desired_count(p, Budget("hello", 5, 0.1, 256), nodes=3, declined=2) == 1
    assert desired_count(p, None, nodes=5, declined=0) == 3


def info(state: str, digest: str = GREEN, restarts: int = 0, node: str = "node-1") -> InstanceInfo:
    return InstanceInfo(id=f"hello@{node}#1", app="hello", node=node, digest=digest,
                        state=state, child="c", url="http://127.0.0.1:1", restarts=restarts)


def test_app_states() -> None:
    p = plan(min=1, published_at=0.0)
    assert app_state(None, 0, []) == "stopped"
    assert app_state(p, 1, [info("Ready")], now=1.0) == "running"
    assert app_state(p, 1, [info("Ready", BLUE)], now=1.0) == "updating"
    assert app_state(p, 1, [info("Launching", restarts=5)], now=1.0) == "crashloop"
    assert app_state(p, 1, [info("Launching")], now=1.0) == "starting"
    assert app_state(p, 1, [info("Launching")], now=100.0) == "degraded"
    assert app_state(plan(status="failed"), 1, [info("Ready")]) == "failed"


def test_routes_hold_ready_endpoints_of_planned_apps_only() -> None:
    gone = InstanceInfo(id="gone@node-1#9", app="gone", node="node-1", digest=GREEN,
                        state="Ready", child="c", url="http://127.0.0.1:2")
    table = routes({"hello": plan()}, [info("Ready"), info("Launching", node="node-2"),
                                       info("Draining", node="node-3"), gone])
    assert [(r.app, [e.instance for e in r.endpoints]) for r in table] == \
        [("hello", ["hello@node-1#1"])]


def test_messages_cross_the_wire_unchanged() -> None:
    for message in (Crash(), PlanChanged("hello", plan(), Budget("hello", 3, 0.1, 256)),
                    PlanChanged("hello", None, None)):
        assert from_wire(to_wire(message)) == message
    with pytest.raises(ValueError, match="unknown message type"):
        from_wire({"type": "Nope"})


def test_state_words_cross_the_wire_as_the_same_strings_and_come_back_as_members() -> None:
    info = InstanceInfo(id="i", app="hello", node="node-1", digest=GREEN,
                        state=InstanceState.READY, child="c")
    wire = orjson.loads(orjson.dumps(to_wire(info)))
    assert wire["state"] == "Ready"  # the JSON keeps the word
    back = from_wire(wire)
    assert back == info and back.state is InstanceState.READY
    failed = from_wire(orjson.loads(orjson.dumps(to_wire(plan(status=PlanStatus.FAILED)))))
    assert failed.status is PlanStatus.FAILED
    with pytest.raises(ValueError, match="state"):
        from_wire({**wire, "state": "Sleeping"})


def test_the_store_keeps_plans_and_budgets_across_reopen(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "fabric.db")
    store.save(plan(), Budget("hello", 3, 0.1, 256))
    store.close()
    again = SqliteStore(tmp_path / "fabric.db")
    state = again.load()
    assert state.plans == {"hello": plan()} and state.budgets["hello"].max_instances == 3
    again.delete("hello")
    assert again.load().plans == {}
    again.close()


STATES = ["Launching", "Ready", "Draining"]


@st.composite
def situations(draw: st.DrawFn) -> tuple[Plan, list[ChildView], float]:
    digests = [GREEN, BLUE, "c" * 64]
    kids = []
    for n in range(draw(st.integers(0, 3))):
        state = draw(st.sampled_from(STATES))
        started = draw(st.floats(0, 100))
        ready = started + draw(st.floats(0, 10)) if state == "Ready" else None
        kids.append(ChildView(f"c{n}", draw(st.sampled_from(digests)), state, started, ready))
    p = plan(draw(st.sampled_from(digests)), warmup=draw(st.floats(0, 5)),
             timeout=draw(st.floats(0.1, 20)),
             status=draw(st.sampled_from(["active", "failed"])))
    return p, kids, draw(st.floats(0, 200))


@given(situations(), st.booleans(), st.booleans())
def test_rollout_never_starts_a_digest_being_stopped_or_failed_here(
        situation: tuple[Plan, list[ChildView], float], failed: bool, stop_green: bool) -> None:
    p, kids, now = situation
    stopping = [ChildView("s", p.digest, "Draining", 0.0)] if stop_green else []
    actions = step(p, kids, now, stopping=stopping, failed=failed)
    if failed or stop_green:
        assert not [a for a in actions if isinstance(a, Start)], (p, kids, actions)


@given(situations())
def test_rollout_never_leaves_a_node_without_a_ready_instance_it_had(
        situation: tuple[Plan, list[ChildView], float]) -> None:
    p, kids, now = situation
    actions = step(p, kids, now)
    stopped = {a.child for a in actions if isinstance(a, Stop)}
    started = [a for a in actions if isinstance(a, Start)]
    ready_before = [k for k in kids if k.state == "Ready"]
    ready_after = [k for k in ready_before if k.child not in stopped]
    # blue is only stopped beside a Ready green of the plan's digest
    if ready_before and not started:
        assert ready_after, (p, kids, actions)
    if stopped - {k.child for k in kids if k.digest == p.digest}:
        assert any(k.digest == p.digest and k.state == "Ready" and k.child not in stopped
                   for k in kids)
    # at most one instance of the plan's digest is started, and only when none exists
    assert len(started) <= 1
    if started:
        assert all(k.digest != p.digest for k in kids)
    # a failure always comes with stopping green, never blue
    for fail in (a for a in actions if isinstance(a, Fail)):
        assert fail.digest == p.digest
        assert stopped <= {k.child for k in kids if k.digest == p.digest}


@given(st.lists(st.tuples(st.sampled_from(["claim", "release", "evict"]),
                          st.sampled_from(["node-1", "node-2", "node-3", "node-4"]),
                          st.integers(0, 4))))
def test_local_slots_never_grant_more_than_the_limit(ops: list[tuple[str, str, int]]) -> None:
    slots, held = LocalSlots(), set()
    for op, node, limit in ops:
        if op == "claim":
            reply = slots.claim("hello", node, limit)
            if reply.granted and node not in held:
                assert len(held) < limit, (held, node, limit)
                held.add(node)
            assert reply.granted == (node in held)
        elif op == "release":
            slots.release("hello", node)
            held.discard(node)
        else:
            evicted = slots.evict("hello", limit)
            assert evicted <= held and len(held - evicted) == min(len(held), limit)
            held -= evicted
    assert slots.lost() == []
