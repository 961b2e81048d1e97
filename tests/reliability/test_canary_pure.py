"""Canaries, weights, answer windows and histories as pure functions (no threads, no mesh)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.edge.answers import AnswerWindow
from mycelium.edge.balancer import Balancer
from mycelium.edge.routes import Endpoint, Route
from mycelium.edge.weights import SmoothWeights
from mycelium.fabric import history
from mycelium.fabric.canary import (
    MIN_ANSWERS,
    Keep,
    Promote,
    Rates,
    Revert,
    endpoint_weights,
    judge,
    pick_canary_nodes,
    weighted_routes,
)
from mycelium.fabric.errors import BadPlan
from mycelium.fabric.history import NothingToRollBack
from mycelium.fabric.rollouts import reverted
from mycelium.mesh.rollout_ops import canary_fields
from mycelium.messages import AppRoute, EndpointInfo, InstanceInfo, Plan
from mycelium.node.rollout import ChildView, Start, Stop, step
from mycelium.states import InstanceState, PlanStatus

OLD, NEW = "a" * 64, "b" * 64


def _plan(**fields: object) -> Plan:
    base = Plan(app="web", digest=NEW, min=1, max=3, warmup=0.0, timeout=10.0, generation=2,
                published_at=100.0, previous=OLD, canary_nodes=("node-1",))
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def _info(node: str, digest: str, n: int = 0,
          state: InstanceState = InstanceState.READY) -> InstanceInfo:
    return InstanceInfo(id=f"web-{node}-{n}", app="web", node=node, digest=digest, state=state,
                        child=f"c{n}", url=f"http://127.0.0.1:{9000 + n}")


# -- smooth weighted round-robin ---------------------------------------------------------------

@given(st.lists(st.integers(1, 50), min_size=1, max_size=8), st.integers(1, 4))
def test_over_every_cycle_each_endpoint_is_picked_exactly_its_weight(
        weights: list[int], cycles: int) -> None:
    smooth = SmoothWeights(weights)
    picks = [smooth.pick() for _ in range(sum(weights) * cycles)]
    assert [picks.count(i) for i in range(len(weights))] == [w * cycles for w in weights]


@given(st.integers(1, 99), st.integers(1, 5), st.integers(1, 5))
def test_the_canaries_take_their_percent_within_two_points_over_10000_requests(
        percent: int, canaries: int, olds: int) -> None:
    w_new, w_old = endpoint_weights(canaries, olds, percent)
    smooth = SmoothWeights([w_new] * canaries + [w_old] * olds)
    new = sum(1 for _ in range(10_000) if smooth.pick() < canaries)
    assert abs(new / 100 - percent) <= 2


def test_smooth_picks_are_interleaved_not_bunched() -> None:
    smooth = SmoothWeights([5, 1, 1])
    assert [smooth.pick() for _ in range(7)] == [0, 0, 1, 0, 2, 0, 0]


def test_bad_weights_are_refused() -> None:
    for bad in ([], [0, 1], [-1]):
        with pytest.raises(ValueError):
            SmoothWeights(bad)


def test_the_balancer_follows_weights_on_a_weighted_route_and_round_robin_otherwise() -> None:
    eps = (Endpoint("http://127.0.0.1:1", "a", NEW, 3), Endpoint("http://127.0.0.1:2", "b", OLD, 1))
    balancer = Balancer()
    firsts = [balancer.order(Route("web", eps))[0].instance for _ in range(400)]
    assert firsts.count("a") == 300
    plain = Route("web", tuple(Endpoint(e.url, e.instance) for e in eps))
    assert not plain.weighted
    firsts = [balancer.order(plain)[0].instance for _ in range(400)]
    assert firsts.count("a") == 200


def test_weighted_routes_tag_only_apps_in_a_canary() -> None:
    plans = {"web": _plan(canary_weight=25), "api": _plan(app="api", canary_nodes=())}
    infos = [_info("node-1", NEW, 1), _info("node-2", OLD, 2), _info("node-3", OLD, 3)]
    table = (AppRoute("api", (EndpointInfo("http://127.0.0.1:1", "x"),)),
             AppRoute("web", tuple(EndpointInfo(i.url or "", i.id) for i in infos)))
    api, web = weighted_routes(table, plans, infos)
    assert api == table[0]
    weights = {ep.digest: ep.weight for ep in web.endpoints}
    assert weights == {NEW: 25 * 2, OLD: 75 * 1}  # one canary 25 %, two olds 75 % together


# -- judging -------------------------------------------------------------------------------

rates = st.builds(lambda n, k: Rates(n, min(n, k)), st.integers(0, 500), st.integers(0, 500))


@given(rates, rates, st.floats(0, 100))
def test_a_canary_with_fewer_than_20_answers_is_never_reverted_for_its_errors(
        canary: Rates, old: Rates, since: float) -> None:
    small = Rates(min(canary.answered, MIN_ANSWERS - 1), min(canary.errors, MIN_ANSWERS - 1))
    assert not isinstance(judge(_plan(), small, old, since, False, 200.0), Revert)


@given(rates, rates)
def test_a_canary_is_reverted_exactly_when_it_is_5_points_worse_with_20_answers(
        canary: Rates, old: Rates) -> None:
    verdict = judge(_plan(), canary, old, None, False, 200.0)
    worse = canary.answered >= 20 and canary.percent - old.percent > 5
    assert isinstance(verdict, Revert) == worse
    if worse:
        assert "5xx rate" in verdict.reason  # type: ignore[union-attr]


def test_a_canary_that_left_ready_is_reverted_and_a_passing_one_promotes_after_s() -> None:
    plan = _plan(auto_promote=30.0)
    assert isinstance(judge(plan, Rates(), Rates(), 100.0, True, 101.0), Revert)
    assert isinstance(judge(plan, Rates(50, 0), Rates(), 100.0, False, 129.0), Keep)
    assert isinstance(judge(plan, Rates(50, 0), Rates(), 100.0, False, 130.0), Promote)
    assert isinstance(judge(_plan(), Rates(50, 0), Rates(), 0.0, False, 1e9), Keep)  # no S


def test_canary_nodes_are_nodes_running_the_old_digest() -> None:
    infos = [_info("node-3", OLD), _info("node-1", OLD), _info("node-2", NEW)]
    assert pick_canary_nodes(2, "web", OLD, infos) == ("node-1", "node-3")
    with pytest.raises(BadPlan):
        pick_canary_nodes(3, "web", OLD, infos)
    with pytest.raises(BadPlan):
        pick_canary_nodes(1, "web", None, infos)


def test_a_reverted_canary_plan_goes_back_to_the_old_digest_and_ends_the_canary() -> None:
    back = reverted(_plan(), "bad", 3, 200.0)
    assert (back.digest, back.status, back.canary_nodes, back.generation) == (
        OLD, PlanStatus.FAILED, (), 3)


@pytest.mark.parametrize(("req", "ok"), [
    ({}, True), ({"canary": 1}, True), ({"canary": 2, "canary_weight": 99}, True),
    ({"canary": 0}, False), ({"canary": 1, "canary_weight": 0}, False),
    ({"canary": 1, "canary_weight": 100}, False), ({"canary_weight": 10}, False),
    ({"canary": 1, "auto_promote": 0}, False), ({"canary": "1"}, False),
    ({"canary": True}, False)])
def test_the_canary_fields_of_a_deploy_request(req: dict[str, object], ok: bool) -> None:
    if ok:
        canary_fields(req)
    else:
        with pytest.raises(BadPlan):
            canary_fields(req)


# -- the node's step beside a canary ----------------------------------------------------------

def _child(digest: str, name: str, ready: bool = True) -> ChildView:
    return ChildView(name, digest, InstanceState.READY if ready else InstanceState.LAUNCHING,
                     started_at=0.0, ready_at=1.0 if ready else None)


def test_a_canary_node_runs_green_beside_blue_and_stops_neither_until_promoted() -> None:
    plan = _plan()
    assert step(plan, [_child(OLD, "blue")], 50.0, node="node-1") == [Start(NEW)]
    both = [_child(OLD, "blue"), _child(NEW, "green")]
    assert step(plan, both, 50.0, node="node-1") == []
    assert step(dataclasses.replace(plan, canary_nodes=()), both, 50.0,
                node="node-1") == [Stop("blue")]


def test_other_nodes_keep_their_old_digest_during_a_canary() -> None:
    plan = _plan()
    assert step(plan, [_child(OLD, "blue")], 50.0, node="node-2") == []
    assert step(plan, [], 50.0, node="node-2") == [Start(OLD)]
    assert step(plan, [_child(OLD, "blue"), _child(NEW, "stray")], 50.0,
                node="node-2") == [Stop("stray")]


def test_a_canary_not_ready_in_time_fails_as_any_green() -> None:
    actions = step(_plan(), [_child(OLD, "blue"), _child(NEW, "green", ready=False)], 50.0,
                   node="node-1")
    assert [type(a).__name__ for a in actions] == ["Fail", "Stop"]


# -- answers over the window ------------------------------------------------------------------

def test_the_answer_window_counts_per_digest_and_forgets_after_30_seconds() -> None:
    now = [1000.0]
    window = AnswerWindow(clock=lambda: now[0])
    for k in range(10):
        window.count("web", NEW, 500 if k % 2 else 200)
    window.count("web", OLD, 200)
    assert {a.digest: (a.answered, a.errors) for a in window.snapshot()} == {
        NEW: (10, 5), OLD: (1, 0)}
    now[0] += 29.0
    window.count("web", NEW, 503)
    got = {a.digest: (a.answered, a.errors) for a in window.snapshot()}
    assert got == {NEW: (11, 6), OLD: (1, 0)}
    now[0] += 1.0  # the first second left the window
    assert {a.digest: (a.answered, a.errors) for a in window.snapshot()} == {NEW: (1, 1)}
    now[0] += 60.0
    assert window.snapshot() == ()


@settings(max_examples=50)
@given(st.lists(st.tuples(st.integers(0, 100), st.booleans()), max_size=200))
def test_the_window_total_is_what_was_counted_in_the_last_30_seconds(
        events: list[tuple[int, bool]]) -> None:
    now = [0.0]
    window = AnswerWindow(clock=lambda: now[0])
    end = max((second for second, _bad in events), default=0)
    got: tuple[object, ...] = ()
    for second in range(end + 1):  # the edge snapshots once a second
        for _ in [e for e in events if e[0] == second]:
            window.count("web", NEW, 500 if _[1] else 200)
        now[0] = float(second)
        got = window.snapshot()
    recent = [bad for second, bad in events if end - second < 30]
    if recent:
        (answers,) = got
        assert (answers.answered, answers.errors) == (len(recent), sum(recent))  # type: ignore[attr-defined]
    else:
        assert got == ()


@given(st.lists(st.integers(1, 300), min_size=1, max_size=6), st.integers(1, 3))
def test_the_precomputed_cycle_picks_exactly_as_live_swrr(weights: list[int], turns: int) -> None:
    from mycelium.edge.weights import WeightedCycle

    cycle, live = WeightedCycle(weights), SmoothWeights(weights)
    n = sum(weights) * turns
    picks = [cycle.pick() for _ in range(n)]
    assert [picks.count(i) for i in range(len(weights))] == [w * turns for w in weights]
    if math.gcd(*weights) == 1:
        assert picks == [live.pick() for _ in range(n)]


# -- history ---------------------------------------------------------------------------------

def _deploy(records: list[history.Deployment], generation: int,
            digest: str) -> list[history.Deployment]:
    plan = _plan(generation=generation, digest=digest, published_at=float(generation))
    return history.published(records, plan, "me@here", f"1.0.{generation}")


def test_history_outcomes_through_deploys_a_failure_a_revert_and_a_stop() -> None:
    records = _deploy([], 1, OLD)
    records = _deploy(records, 2, NEW)
    assert [r.outcome for r in records] == ["superseded", "running"]
    records = history.failed(records, NEW, "not Ready", False, OLD)
    assert [r.outcome for r in records] == ["running", "failed: not Ready"]
    records = _deploy(records, 4, NEW)
    records = history.failed(records, NEW, "5xx", True, OLD)
    assert [r.outcome for r in records][-1] == "rolled back: 5xx"
    assert records[0].outcome == "running"
    records = history.stopped(records)
    assert records[0].outcome == "succeeded"
    docs = history.history_doc(records)
    assert set(docs[0]) == {"generation", "digest", "version", "at", "outcome", "who"}
    assert docs[0]["at"] == "1970-01-01T00:00:01Z"


@given(st.lists(st.sampled_from([OLD, NEW, "c" * 64]), min_size=1, max_size=80),
       st.integers(1, 20))
def test_history_is_bounded_ordered_and_has_one_running_deployment(
        digests: list[str], keep: int) -> None:
    records: list[history.Deployment] = []
    for generation, digest in enumerate(digests, 1):
        plan = _plan(generation=generation, digest=digest)
        records = history.published(records, plan, "", "", keep)
    assert len(records) == min(keep, len(digests))
    assert [r.generation for r in records] == sorted(r.generation for r in records)
    assert [r.outcome for r in records].count("running") == 1
    assert records[-1].outcome == "running"


def test_rollback_targets() -> None:
    records = _deploy(_deploy(_deploy([], 1, OLD), 2, NEW), 3, NEW)
    assert history.rollback_target(records, "", NEW).generation == 1
    assert history.rollback_target(records, "2", NEW).generation == 2
    assert history.rollback_target(records, OLD[:12], NEW).digest == OLD
    with pytest.raises(BadPlan):
        history.rollback_target(records, "99", NEW)
    with pytest.raises(BadPlan):
        history.rollback_target(records, "ffff", NEW)
    with pytest.raises(NothingToRollBack):
        history.rollback_target(_deploy([], 1, OLD), "", OLD)


def test_the_watch_reverts_a_canary_whose_readiness_check_fails_after_it_was_ready() -> None:
    from mycelium.fabric.canary_watch import CanaryWatch
    from mycelium.rollout_messages import DigestAnswers, EdgeAnswers

    watch, plan = CanaryWatch(), _plan()
    plans = {"web": plan}
    launching = [_info("node-1", NEW, 1, InstanceState.LAUNCHING), _info("node-2", OLD, 2)]
    assert isinstance(watch.verdicts(plans, launching, 1.0)[0][1], Keep)  # not Ready yet: fine
    ready = [_info("node-1", NEW, 1), _info("node-2", OLD, 2)]
    assert isinstance(watch.verdicts(plans, ready, 2.0)[0][1], Keep)
    watch.answers(EdgeAnswers((DigestAnswers("web", NEW, 10, 0), DigestAnswers("web", OLD, 9, 0))))
    assert watch.doc(plan, ready)["answered"] == 10
    unready = [dataclasses.replace(ready[0], serving=False), ready[1]]
    (_, verdict), = watch.verdicts(plans, unready, 3.0)
    assert isinstance(verdict, Revert) and "health checks" in verdict.reason
    assert watch.verdicts({}, unready, 4.0) == []  # the canary ended: nothing kept
    assert watch.rates("web", NEW) == Rates()
