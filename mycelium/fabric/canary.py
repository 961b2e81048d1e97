"""Canaries as pure functions: where they run, how the edge weighs them, when they end.

A canary deploy (``deploy … --canary N``) publishes a plan whose ``canary_nodes`` name the N
nodes that start the new digest beside the old one; every other node keeps the old digest.
While the plan is in that phase the fabric gives the edge per-endpoint weights (smooth weighted
round-robin, so the canaries take ``canary_weight`` % of the requests) and every second judges
the canary by what the edge answered (:func:`judge`): a canary clearly worse than the old
instances is reverted, one that passed its checks long enough is promoted. Like Nomad's
``canary`` + ``auto_promote`` + ``auto_revert``, and Argo Rollouts' analysis, in a few lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mycelium.messages import AppRoute, EndpointInfo, InstanceInfo, Plan
from mycelium.states import InstanceState

from .errors import BadPlan

__all__ = ["MARGIN", "MIN_ANSWERS", "WINDOW", "Keep", "Promote", "Rates", "Revert",
           "Verdict", "canary_doc", "endpoint_weights", "judge", "pick_canary_nodes",
           "weighted_routes"]

MIN_ANSWERS = 20
"""Answers a canary must have given before its error rate is judged."""
MARGIN = 5.0
"""Points by which the canary's 5xx rate may exceed the old instances' before it reverts."""
WINDOW = 30.0
"""Seconds of answers the edge counts (its sliding window)."""


@dataclass(frozen=True, slots=True)
class Rates:
    """What one digest answered over the window: answers and the 5xx among them."""

    answered: int = 0
    errors: int = 0

    @property
    def percent(self) -> float:
        """The 5xx rate in percent (0 with no answers)."""
        return 100.0 * self.errors / self.answered if self.answered else 0.0


@dataclass(frozen=True, slots=True)
class Keep:
    """The canary goes on as it is."""


@dataclass(frozen=True, slots=True)
class Promote:
    """The canary passed its checks for ``auto_promote`` seconds: continue the rollout."""


@dataclass(frozen=True, slots=True)
class Revert:
    """The canary is worse than the old instances: stop it, ``reason`` says why."""

    reason: str


Verdict = Keep | Promote | Revert


def pick_canary_nodes(count: int, app: str, old_digest: str | None,
                      instances: Iterable[InstanceInfo]) -> tuple[str, ...]:
    """The ``count`` nodes that run the canary: nodes running the old digest, by name.

    Raises:
        BadPlan: no old digest runs, or fewer nodes than ``count`` run it.
    """
    if count < 1:
        raise BadPlan(f"--canary must be at least 1, not {count}")
    if old_digest is None:
        raise BadPlan(f"a canary needs {app} running another digest: deploy it first")
    nodes = sorted({i.node for i in instances if i.app == app and i.digest == old_digest
                    and i.state in (InstanceState.READY, InstanceState.LAUNCHING)})
    if len(nodes) < count:
        raise BadPlan(f"--canary {count} needs {count} nodes running {app} "
                      f"{old_digest[:12]}; {len(nodes)} do")
    return tuple(nodes[:count])


def endpoint_weights(canaries: int, olds: int, percent: int) -> tuple[int, int]:
    """Integer SWRR weights (one canary endpoint, one old endpoint) so that the canaries
    together take ``percent`` % of the requests (0: every endpoint weighs the same)."""
    if percent <= 0 or canaries == 0 or olds == 0:
        return 1, 1
    return percent * olds, (100 - percent) * canaries


def weighted_routes(routes: Sequence[AppRoute], plans: Mapping[str, Plan],
                    instances: Iterable[InstanceInfo]) -> tuple[AppRoute, ...]:
    """The routing table with digests and weights on the endpoints of apps in a canary."""
    canaried = {app for app, plan in plans.items() if plan.canary_nodes}
    if not canaried:
        return tuple(routes)
    digests = {i.id: i.digest for i in instances if i.app in canaried}
    out = []
    for route in routes:
        plan = plans.get(route.app)
        if plan is None or not plan.canary_nodes:
            out.append(route)
            continue
        tagged = [(ep, digests.get(ep.instance, "")) for ep in route.endpoints]
        n_new = sum(1 for _ep, d in tagged if d == plan.digest)
        w_new, w_old = endpoint_weights(n_new, len(tagged) - n_new, plan.canary_weight)
        out.append(AppRoute(route.app, tuple(
            EndpointInfo(ep.url, ep.instance, d, w_new if d == plan.digest else w_old)
            for ep, d in tagged)))
    return tuple(out)


def judge(plan: Plan, canary: Rates, old: Rates, ready_since: float | None, lost: bool,
          now: float) -> Verdict:
    """What to do with a canary now (called every second while it runs).

    Args:
        plan: The app's plan (in its canary phase).
        canary: The canary digest's answers over the window.
        old: The old digest's answers over the window.
        ready_since: When every canary was first Ready (None: not yet).
        lost: A canary that was Ready left Ready (it failed its health checks).
        now: The current time (epoch seconds).
    """
    if lost:
        return Revert("a canary failed its health checks")
    if canary.answered >= MIN_ANSWERS and canary.percent - old.percent > MARGIN:
        return Revert(f"canary 5xx rate {canary.percent:.1f}% over the last {WINDOW:g}s "
                      f"exceeds the old instances' {old.percent:.1f}% by more than "
                      f"{MARGIN:g} points ({canary.errors} of {canary.answered} answers)")
    if plan.auto_promote > 0 and ready_since is not None \
            and now - ready_since >= plan.auto_promote:
        return Promote()
    return Keep()


def canary_doc(plan: Plan, instances: Iterable[InstanceInfo], canary: Rates,
               old: Rates) -> dict[str, object]:
    """The ``canary`` object of an app in ``status --json``: both digests, the canaries'
    share of requests and the live 5xx rate of each digest."""
    live = [i for i in instances if i.app == plan.app and i.state == InstanceState.READY]
    n_new = sum(1 for i in live if i.digest == plan.digest)
    n_old = len(live) - n_new
    if plan.canary_weight:
        share = float(plan.canary_weight) if n_new and n_old else (100.0 if n_new else 0.0)
    else:
        share = 100.0 * n_new / len(live) if live else 0.0
    return {"digest": plan.digest, "old_digest": plan.previous, "count": len(plan.canary_nodes),
            "nodes": list(plan.canary_nodes), "ready": n_new, "weight": round(share, 2),
            "auto_promote": plan.auto_promote,
            "error_rate": round(canary.percent, 2), "answered": canary.answered,
            "errors": canary.errors,
            "old": {"digest": plan.previous, "error_rate": round(old.percent, 2),
                    "answered": old.answered, "errors": old.errors}}
