"""The pure placement and autoscaling decisions: their invariants, property-tested."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from mycelium.fabric.scaling import NodeRoom, ScaleState, autoscale, place

_rooms = st.lists(
    st.builds(NodeRoom, st.sampled_from(["n"]), st.floats(0, 4, allow_nan=False),
              st.integers(0, 4096), st.booleans()),
    min_size=1, max_size=6).map(
        lambda rs: [NodeRoom(f"node-{i}", r.cpu, r.mem, r.open) for i, r in enumerate(rs)])
_budget = st.tuples(st.sampled_from([0.1, 0.25, 0.5, 1.0]), st.sampled_from([16, 64, 256]))


@given(_rooms, st.integers(0, 60), _budget)
def test_never_over_capacity_nor_over_want(rooms: list[NodeRoom], want: int,
                                           budget: tuple[float, int]) -> None:
    cpu, mem = budget
    counts = place(rooms, want, {}, cpu, mem)
    assert sum(counts.values()) <= want
    for room in rooms:
        n = counts[room.name]
        assert n * cpu <= room.cpu + 1e-9 and n * mem <= room.mem
        if not room.open:
            assert n == 0


@given(_rooms, st.integers(0, 60), _budget)
def test_spread_first(rooms: list[NodeRoom], want: int, budget: tuple[float, int]) -> None:
    cpu, mem = budget
    counts = place(rooms, want, {}, cpu, mem)
    fitting_empty = [r for r in rooms if counts[r.name] == 0 and r.open
                     and cpu <= r.cpu + 1e-9 and mem <= r.mem]
    if fitting_empty:
        assert all(n <= 1 for n in counts.values())
    # and as many as fit are placed
    room_for = sum(min(int((r.cpu + 1e-9) // cpu), r.mem // mem) for r in rooms if r.open)
    assert sum(counts.values()) == min(want, room_for)


@given(_rooms, st.integers(0, 40), _budget)
def test_one_more_moves_nothing(rooms: list[NodeRoom], want: int,
                                budget: tuple[float, int]) -> None:
    cpu, mem = budget
    before = place(rooms, want, {}, cpu, mem)
    after = place(rooms, want + 1, before, cpu, mem)
    assert all(after[n] >= before[n] for n in before)
    assert sum(after.values()) - sum(before.values()) in (0, 1)
    assert place(rooms, want, before, cpu, mem) == before  # a re-placement is a no-op


@given(_rooms, st.integers(0, 40), st.integers(0, 40), _budget)
def test_scale_down_only_removes(rooms: list[NodeRoom], want: int, less: int,
                                 budget: tuple[float, int]) -> None:
    cpu, mem = budget
    before = place(rooms, want, {}, cpu, mem)
    after = place(rooms, min(want, less), before, cpu, mem)
    assert all(after[n] <= before[n] for n in before)


def test_closed_node_gets_nothing_and_its_share_moves() -> None:
    rooms = [NodeRoom("node-1", 4, 4096), NodeRoom("node-2", 4, 4096, open=False),
             NodeRoom("node-3", 4, 4096)]
    assert place(rooms, 4, {"node-2": 2}, 0.1, 64) == {"node-1": 2, "node-2": 0, "node-3": 2}


@given(st.floats(0, 500, allow_nan=False), st.integers(0, 5), st.integers(1, 60),
       st.sampled_from([0.5, 1.0, 5.0, 10.0]), st.integers(0, 60))
def test_autoscale_clamps_and_scales_up_at_once(in_flight: float, low: int, span: int,
                                                target: float, before: int) -> None:
    high = low + span
    state, reason = autoscale(ScaleState(before), in_flight, 100.0, low=low, high=high,
                              target=target)
    wanted = max(low, min(high, math.ceil(in_flight / target - 1e-9)))
    assert low <= state.desired <= max(high, before)
    if wanted >= before:
        assert state.desired == wanted
    else:
        assert state.desired == before and state.below_since == 100.0
    assert reason


def test_autoscale_down_in_one_step_after_the_quiet_period() -> None:
    state = ScaleState(10)
    state, _ = autoscale(state, 0.0, 0.0, low=1, high=20, target=5)
    assert state.desired == 10
    state, reason = autoscale(state, 0.0, 29.9, low=1, high=20, target=5)
    assert state.desired == 10 and reason.startswith("holding")
    state, _ = autoscale(state, 12.0, 29.95, low=1, high=20, target=5)  # still below 10
    state, reason = autoscale(state, 0.0, 30.0, low=1, high=20, target=5)
    assert state.desired == 1 and reason.startswith("scaled down")
    state, _ = autoscale(ScaleState(3, 0.0), 15.0, 31.0, low=1, high=20, target=5)
    assert state == ScaleState(3)  # back at target: the quiet period starts over
