"""Blue/green on one node as a pure function (Flow D): (plan, children here, now) → actions.

The agent applies the actions and calls :func:`step` again on every event (a plan, an instance
report, a timer), so the whole rollout is a reconciliation with no hidden state:

- no child of the plan's digest and secrets count → start one (green; blue keeps serving);
- green Ready → after ``warmup`` seconds beside blue, every other digest drains and stops
  (at once after a rollback: the plan is ``failed`` and green is the old blue);
- green not Ready within ``timeout`` while blue still runs → stop green, leave blue untouched,
  and report the failure so the fabric rolls the plan back;
- a green of the plan's digest still being stopped, or a digest this node already reported
  failed under this very plan → start nothing: wait for the stop to finish, or for the fabric's
  rolled-back plan (a new green started meanwhile would outlive the rollback);
- a plan in its canary phase (``canary_nodes``) → a canary node runs green beside blue and
  stops neither until the plan is promoted (or fails); any other node keeps its old digest.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from mycelium.messages import Plan
from mycelium.states import InstanceState, PlanStatus

__all__ = ["Action", "ChildView", "Fail", "Start", "Stop", "WakeAt", "is_green", "step",
           "switched"]


@dataclass(frozen=True, slots=True)
class ChildView:
    """What the agent knows of one instance child of the app on this node."""

    child: str
    digest: str
    state: InstanceState
    started_at: float
    ready_at: float | None = None
    secrets: int = 0


@dataclass(frozen=True, slots=True)
class Start:
    """Start an instance of ``digest`` beside whatever runs."""

    digest: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Drain (leave the routes first) and stop the child."""

    child: str


@dataclass(frozen=True, slots=True)
class Fail:
    """Report that ``digest`` failed on this node (the fabric rolls back)."""

    digest: str
    reason: str


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Call :func:`step` again at ``when`` (epoch seconds) even if nothing happens."""

    when: float


Action = Start | Stop | Fail | WakeAt


def is_green(plan: Plan, child: ChildView) -> bool:
    """Whether ``child`` runs what ``plan`` wants: its digest with its secrets count."""
    return child.digest == plan.digest and child.secrets == plan.secrets


def switched(plan: Plan, children: Mapping[str, ChildView], stopping: Collection[str]) -> bool:
    """Whether a node's switch of the app is over: every child it keeps runs ``plan``.

    A blue being stopped no longer counts: it has left the routes (its drain begins there), so
    the next node may start its green while this blue finishes its requests in flight and
    exits — the bound of ``[rollout] parallel`` is on nodes serving both versions at once, and a
    drain's grace (seconds, for a slow request) stays off the rollout's critical path.
    """
    return all(is_green(plan, v) for c, v in children.items() if c not in stopping)


def step(plan: Plan, children: Iterable[ChildView], now: float, *,
         stopping: Iterable[ChildView] = (), failed: bool = False,
         node: str = "") -> list[Action]:
    """The next actions for one app on one node.

    Args:
        plan: The app's current plan.
        children: The app's instance children on this node that are not being stopped.
        now: The current time (epoch seconds).
        stopping: The children being stopped (not counted, but their digest may not start
            again until they are gone: same child, same name).
        failed: This node already reported ``plan.digest`` failed under this plan.
        node: This node's name (whether it is one of a canary's ``canary_nodes``).

    Returns:
        Actions in the order to apply them (possibly none).
    """
    kids = list(children)
    # the best green first: a Ready one is kept over a launching duplicate
    greens = sorted((c for c in kids if is_green(plan, c)),
                    key=lambda c: (c.state != InstanceState.READY, c.started_at))
    olds = [c for c in kids if not is_green(plan, c)]
    if plan.canary_nodes and node not in plan.canary_nodes:
        return _beside_canary(plan, greens, olds, stopping)
    if not greens:
        if failed or any(is_green(plan, c) for c in stopping):
            return []
        return [Start(plan.digest)]
    actions: list[Action] = [Stop(c.child) for c in greens[1:]]
    green = greens[0]
    if green.state == InstanceState.READY:
        if not olds or plan.canary_nodes:  # a canary waits beside blue for its promote
            return actions
        due = green.ready_at if green.ready_at is not None else now
        if plan.status != PlanStatus.FAILED:
            due += plan.warmup
        if now >= due:
            return actions + [Stop(c.child) for c in olds]
        return [*actions, WakeAt(due)]
    if not olds:
        return actions
    deadline = green.started_at + plan.timeout
    if now >= deadline:
        reason = (f"rollout of {plan.digest[:12]} failed: not Ready within "
                  f"{plan.timeout:g}s (state {green.state})")
        return [*actions, Fail(plan.digest, reason), Stop(green.child)]
    return [*actions, WakeAt(deadline)]


def _beside_canary(plan: Plan, greens: list[ChildView], olds: list[ChildView],
                   stopping: Iterable[ChildView]) -> list[Action]:
    """A node that is not a canary while the plan is in its canary phase keeps the old digest
    (and starts it again if it has nothing running and nothing stopping)."""
    actions: list[Action] = [Stop(c.child) for c in greens]
    if olds or greens or any(True for _c in stopping) or plan.previous is None:
        return actions
    return [Start(plan.previous)]
