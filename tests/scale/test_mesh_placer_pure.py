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
