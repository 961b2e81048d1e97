"""Pure checks for :class:`~mycelium.messages.PublishBatch` (``mycelium apply``'s one write).

A batch is computed by the CLI against a view of the mesh (each app's plan generation); the
fabric applies it only if that view still holds, all of it or nothing. That check-and-set,
like Nomad's ``check-index``, is what keeps two applies at once, or an apply racing a
``deploy``, from leaving the mesh with some apps of one and some of the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mycelium.messages import Plan, PlanVersion, PublishBatch

from .errors import BadPlan, FabricError

__all__ = ["PlanMoved", "check_batch_shape", "moved_plans"]


class PlanMoved(FabricError):
    """The mesh changed since the batch was computed; nothing of the batch was applied."""

    exit_code = 1


def check_batch_shape(batch: PublishBatch) -> None:
    """Refuse a batch that names an app twice (two plans, or a plan and a stop).

    Raises:
        BadPlan: with the app named twice.
    """
    seen: set[str] = set()
    for app in [p.app for p in batch.plans] + list(batch.stops):
        if app in seen:
            raise BadPlan(f"the batch names app {app!r} twice")
        seen.add(app)
    expected: set[str] = set()
    for version in batch.expect:
        if version.app in expected:
            raise BadPlan(f"the batch expects two generations of app {version.app!r}")
        expected.add(version.app)


def moved_plans(plans: Mapping[str, Plan], expect: Iterable[PlanVersion]) -> list[str]:
    """Each expected app whose plan is no longer at the expected generation, as a phrase.

    Generation 0 means "no plan": an app that the batch expects absent but that was deployed
    meanwhile has moved too.
    """
    moved: list[str] = []
    for version in expect:
        plan = plans.get(version.app)
        now = 0 if plan is None else plan.generation
        if now == version.generation:
            continue
        if version.generation == 0:
            moved.append(f"{version.app} was deployed (generation {now})")
        elif plan is None:
            moved.append(f"{version.app} was stopped")
        else:
            moved.append(f"{version.app} moved from generation {version.generation} to {now}")
    return moved
