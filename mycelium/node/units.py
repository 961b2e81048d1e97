"""Several instances of one app on one node: each is a *unit* with its own blue/green.

The fabric tells a node how many instances of an app it runs (its placement); the node keeps
units ``0 … count-1``, and each unit follows :func:`~mycelium.node.rollout.step` on its own
children, so warmup, the rollout deadline and rollback hold per instance exactly as with one.
Units beyond the count (scaled down) drain and stop. Unit 0 keeps the child name a single
instance always had, so a node running one instance looks as it did before.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from mycelium.messages import Plan

from .rollout import Action, ChildView, Stop, WakeAt, step

__all__ = ["unit_actions", "unit_child"]


def unit_child(app: str, node: str, unit: int, digest: str) -> str:
    """The app supervisor's child id of ``unit`` running ``digest``."""
    where = node if unit == 0 else f"{node}.{unit}"
    return f"{app}@{where}:{digest[:12]}"


def unit_actions(plan: Plan, children: Mapping[str, ChildView], stopping: Set[str],
                 units: Mapping[str, int], count: int, now: float, *,
                 failed: bool = False, node: str = "") -> list[tuple[int, Action]]:
    """The next actions for an app's ``count`` units on one node, each tagged with its unit.

    Args:
        plan: The app's plan.
        children: Every instance child of the app here (child id → view).
        stopping: The children being stopped.
        units: child id → unit (a child missing here is unit 0).
        count: How many units the node runs.
        now: The current time (epoch seconds).
        failed: This node already reported ``plan.digest`` failed under this plan.
        node: This node's name (whether it runs a canary: see :func:`step`).

    Returns:
        (unit, action) pairs in order; at most one :class:`WakeAt` (the earliest).
    """
    out: list[tuple[int, Action]] = []
    wake: float | None = None
    live: dict[int, list[ChildView]] = {}
    gone: dict[int, list[ChildView]] = {}
    for child, view in children.items():  # one pass: a node may run hundreds of units
        (gone if child in stopping else live).setdefault(units.get(child, 0), []).append(view)
    for unit in range(count):
        for action in step(plan, live.get(unit, ()), now, stopping=gone.get(unit, ()),
                           failed=failed, node=node):
            if isinstance(action, WakeAt):
                wake = action.when if wake is None else min(wake, action.when)
            else:
                out.append((unit, action))
    for child in sorted(children):
        if child not in stopping and units.get(child, 0) >= count:
            out.append((units.get(child, 0), Stop(child)))
    if wake is not None:
        out.append((0, WakeAt(wake)))
    return out
