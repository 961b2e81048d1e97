"""Several instances of an app on one node: each unit follows its own blue/green (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mycelium.messages import Plan
from mycelium.node.rollout import ChildView, Start, Stop
from mycelium.node.units import unit_actions, unit_child
from mycelium.states import InstanceState

GREEN, BLUE = "g" * 64, "b" * 64
PLAN = Plan("app", GREEN, 1, 10, warmup=2.0, timeout=30.0)


def test_unit_zero_keeps_the_single_instance_name() -> None:
    assert unit_child("app", "node-1", 0, GREEN) == f"app@node-1:{GREEN[:12]}"
    assert unit_child("app", "node-1", 3, GREEN) == f"app@node-1.3:{GREEN[:12]}"


@given(st.integers(0, 12))
def test_an_empty_node_starts_one_per_unit(count: int) -> None:
    actions = unit_actions(PLAN, {}, set(), {}, count, 0.0)
    assert sorted(u for u, a in actions if isinstance(a, Start)) == list(range(count))


@given(st.integers(1, 8), st.integers(0, 8), st.booleans())
def test_scaled_down_units_stop_and_each_blue_waits_for_its_own_green(
        count: int, extra: int, green_ready: bool) -> None:
    children, units = {}, {}
    for u in range(count + extra):
        blue = unit_child("app", "n", u, BLUE)
        children[blue] = ChildView(blue, BLUE, InstanceState.READY, 0.0, 0.0)
        units[blue] = u
        if u < count:
            green = unit_child("app", "n", u, GREEN)
            state = InstanceState.READY if green_ready else InstanceState.LAUNCHING
            children[green] = ChildView(green, GREEN, state, 1.0, 1.0 if green_ready else None)
            units[green] = u
    actions = unit_actions(PLAN, children, set(), units, count, 10.0)
    stopped = {a.child for _, a in actions if isinstance(a, Stop)}
    assert not any(isinstance(a, Start) for _, a in actions)
    for child, u in units.items():
        if u >= count:
            assert child in stopped  # beyond the count: drained, whatever its digest
        elif children[child].digest == BLUE:
            assert (child in stopped) == green_ready  # blue goes once ITS green is Ready
        else:
            assert child not in stopped
