"""Where an app's instances go and how many it wants, as pure functions the fabric applies.

:func:`place` spreads first and fills by capacity second: no node gets a second instance of an
app while a node that could fit one has none, no node is ever promised more cpu or memory than
it offers, and what already runs stays where it is (asking for one more instance never moves an
existing one). :func:`autoscale` turns the edge's in-flight requests into a desired count:
``clamp(ceil(in_flight / C), min, max)``, up at once, down in one step after a quiet period.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mycelium.defaults import DeployDefaults

__all__ = ["SCALE_DOWN_AFTER", "NodeRoom", "ScaleState", "autoscale", "place"]

_EPSILON = 1e-9  # cpu shares are floats: 0.1 * 3 must fit into 0.3

SCALE_DOWN_AFTER = DeployDefaults.SCALE_DOWN_AFTER
"""Seconds an autoscaled app stays below its target before it scales down (in one step)."""


@dataclass(frozen=True, slots=True)
class NodeRoom:
    """What one node can still give an app: capacity left once every *other* app is counted.

    ``open`` False: the node is draining or drained, nothing new goes there (what runs there
    is not counted by :func:`place`; the caller decides when it leaves).
    """

    name: str
    cpu: float
    mem: int
    open: bool = True


def _fits(room: NodeRoom, count: int, cpu: float, mem: int) -> bool:
    return (room.open and (count + 1) * cpu <= room.cpu + _EPSILON
            and (count + 1) * mem <= room.mem)


def place(rooms: Sequence[NodeRoom], want: int, current: Mapping[str, int], cpu: float,
          mem: int) -> dict[str, int]:
    """How many instances of one app each node runs.

    Args:
        rooms: The nodes that may run it, with the room the other apps leave on each.
        want: Instances wanted in all.
        current: What runs now (node → count); kept as far as it still fits and is wanted.
        cpu: Cores one instance reserves.
        mem: MB one instance reserves.

    Returns:
        node → count for every node of ``rooms`` (0 included); the sum is at most ``want``
        (less when the nodes are full).
    """
    counts: dict[str, int] = {}
    for room in rooms:  # keep what runs, as far as it fits
        keep = 0
        while keep < current.get(room.name, 0) and _fits(room, keep, cpu, mem):
            keep += 1
        counts[room.name] = keep
    order = {room.name: i for i, room in enumerate(rooms)}
    while sum(counts.values()) > want:  # scaled down: the fullest (last by order) gives one back
        name = max(counts, key=lambda n: (counts[n], order[n]))
        counts[name] -= 1
    by_name = {room.name: room for room in rooms}
    while sum(counts.values()) < want:  # scaled up: the emptiest fitting node (first) takes one
        fitting = [n for n in counts if _fits(by_name[n], counts[n], cpu, mem)]
        if not fitting:
            break
        name = min(fitting, key=lambda n: (counts[n], order[n]))
        counts[name] += 1
    return counts


@dataclass(frozen=True, slots=True)
class ScaleState:
    """An autoscaled app's memory between two decisions.

    ``below_since``: since when the load has wanted fewer than ``desired`` (None: it has not).
    """

    desired: int
    below_since: float | None = None


def autoscale(state: ScaleState, in_flight: float, now: float, *, low: int, high: int,
              target: float, down_after: float = SCALE_DOWN_AFTER) -> tuple[ScaleState, str]:
    """The next desired count of an app and a short sentence saying why.

    Args:
        state: The last decision.
        in_flight: The edge's mean concurrent requests to the app over the last second.
        now: The current time (seconds, any epoch).
        low: The plan's ``min``.
        high: The plan's limit (``max`` and ``max_instances``).
        target: Concurrent requests one instance should serve (``--target-concurrency``).
        down_after: How long the load must want fewer before the count drops.

    Returns:
        The new state and the reason (``desired_reason`` in status).
    """
    wanted = max(low, min(high, math.ceil(in_flight / target - _EPSILON)))
    shown = f"{in_flight:.1f} in flight / target {target:g}"
    if wanted >= state.desired:
        if wanted > state.desired:
            return ScaleState(wanted), f"scaled up to {wanted}: {shown}"
        return ScaleState(wanted), f"steady at {wanted}: {shown}"
    since = state.below_since if state.below_since is not None else now
    if now - since >= down_after:
        return ScaleState(wanted), (f"scaled down to {wanted}: {shown} for "
                                    f"{down_after:g}s")
    return (ScaleState(state.desired, since),
            f"holding {state.desired}: {shown} wants {wanted} (for {now - since:.0f}s of "
            f"{down_after:g}s)")
