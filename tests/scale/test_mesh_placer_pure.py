"""The placer's hand-over between members of a mesh, as pure decisions (no etcd, no threads).

A member elected placer takes over what the previous one published: placing again moves
nothing (open nodes keep their counts, a drained node holds its share until the replacements
are Ready), and a member that only follows sees the same reservations as the placer.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mycelium.fabric.placer import Placer
from mycelium.fabric.scale_hooks import node_order
from mycelium.fabric.scaling import NodeRoom, place
from mycelium.messages import Budget, Plan

NODES = ("a-1", "a-2", "b-1", "b-10", "b-2")


def _plan(app: str, n: int, at: float) -> Plan:
    return Plan(app=app, digest="d" * 64, min=n, max=n, warmup=0.0, timeout=10.0, generation=1,
                published_at=at)


def _placer(drained: tuple[str, ...] = ()) -> Placer:
    placer = Placer(drained)
    for node in NODES:
        placer.set_capacity(node, 1.0, 1024)
    return placer


@given(st.dictionaries(st.sampled_from(["web", "api"]), st.integers(0, 12), min_size=1),
       st.sampled_from([(), ("a-2",), ("b-1", "a-1")]))
def test_a_new_placer_that_takes_over_moves_nothing(wants: dict[str, int],
                                                    drained: tuple[str, ...]) -> None:
    plans = {app: _plan(app, n, float(i)) for i, (app, n) in enumerate(sorted(wants.items()))}
    budgets = {app: Budget(app, 50, 0.1, 16) for app in plans}
    first = _placer()
    first.want.update(wants)
    published = first.assign(plans, budgets, NODES, {})
    for node in drained:  # drained after placing: those nodes hold their share
        first.drain(node)
    published = first.assign(plans, budgets, NODES, {})

    heir = _placer(drained)
    heir.want.update(wants)
    heir.take_over(published)
    assert heir.assign(plans, budgets, NODES, {}) == published  # nothing moves
    follower = _placer(drained)
    follower.follow(published)
    for node in NODES:
        assert follower.reserved(node, budgets) == first.reserved(node, budgets)
        assert follower.node_state(node, False) == first.node_state(node, False)


def test_nodes_are_ordered_by_member_then_index() -> None:
    assert sorted(NODES, key=node_order) == ["a-1", "a-2", "b-1", "b-2", "b-10"]


def _assign_summing_every_time(placer: Placer, plans: dict[str, Plan],
                               budgets: dict[str, Budget]) -> dict[str, dict[str, int]]:
    """The placement as first written: the reservations summed again for every app and node."""
    for app in sorted(plans, key=lambda a: (plans[a].published_at, a)):
        budget, current = budgets[app], placer.counts.get(app, {})
        rooms = []
        for node in NODES:
            cpu, mem = placer.capacity[node]
            used_cpu, used_mem = placer.reserved(node, budgets)
            mine = current.get(node, 0)
            rooms.append(NodeRoom(node, cpu - used_cpu + mine * budget.cpu,
                                  mem - used_mem + mine * budget.mem, True))
        placer.counts[app] = place(rooms, placer.want.get(app, 0), current, budget.cpu,
                                   budget.mem)
    return {app: {n: c for n, c in row.items() if c} for app, row in placer.counts.items()}


@given(st.lists(st.tuples(st.integers(0, 9), st.sampled_from([0.05, 0.1, 0.25, 0.3]),
                          st.sampled_from([16, 64, 200])), min_size=1, max_size=8),
       st.lists(st.tuples(st.integers(0, 7), st.integers(0, 9)), max_size=4))
def test_placing_sums_each_node_once_and_places_as_summing_every_time(
        apps: list[tuple[int, float, int]], changes: list[tuple[int, int]]) -> None:
    """A pass sums a node's reservations again only once a count on it moved: the counts are
    exactly those of summing them for every app, through a first placement and rescales."""
    plans = {f"app{i}": _plan(f"app{i}", n, float(i)) for i, (n, _c, _m) in enumerate(apps)}
    budgets = {f"app{i}": Budget(f"app{i}", 50, cpu, mem) for i, (_n, cpu, mem) in
               enumerate(apps)}
    cached, summing = _placer(), _placer()
    for placer in (cached, summing):
        placer.want.update({f"app{i}": n for i, (n, _c, _m) in enumerate(apps)})
    assert cached.assign(plans, budgets, NODES, {}) == \
        _assign_summing_every_time(summing, plans, budgets)
    for index, n in changes:  # rescales: some counts move, the rest stay
        app = f"app{index % len(apps)}"
        cached.want[app] = summing.want[app] = n
        assert cached.assign(plans, budgets, NODES, {}) == \
            _assign_summing_every_time(summing, plans, budgets)
