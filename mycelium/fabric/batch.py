"""Pure checks for :class:`~mycelium.messages.PublishBatch` (``mycelium apply``'s one write).

A batch is computed by the CLI against a view of the mesh (each app's plan generation); the
fabric applies it only if that view still holds, all of it or nothing. That check-and-set,
like Nomad's ``check-index``, is what keeps two applies at once, or an apply racing a
``deploy``, from leaving the mesh with some apps of one and some of the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mycelium.defaults import DeployDefaults
from mycelium.messages import Budget, Plan, PlanVersion, PublishBatch, PublishPlan, SetBudget

from .errors import BadPlan, FabricError
from .validate import check_budget

__all__ = ["PlanMoved", "budget_of", "check_batch", "check_batch_shape", "moved_message",
           "moved_plans", "next_plan"]


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


def moved_message(moved: list[str]) -> str:
    """The one error line of a refused batch."""
    return ("the mesh changed since this apply read it (" + "; ".join(moved)
            + ", by another apply or deploy); nothing was changed: run it again")


def next_plan(msg: PublishPlan, old: Plan | None, budget: Budget | None, generation: int,
              now: float) -> tuple[Plan, Budget]:
    """The plan and budget that publishing ``msg`` over ``old`` and ``budget`` makes.

    ``previous`` (what a failed update rolls back to) is the old digest, or the old plan's own
    ``previous`` when the digest stays (but not the same digest, which a secrets change leaves
    there for its own rollback); the app's secrets count carries over (and grows when the
    same digest's ``env_secrets`` change, so that its instances restart). Without a budget in
    ``msg`` the app keeps its budget, and a first plan without one gets ``deploy``'s defaults
    (``max`` instances).
    """
    previous = None
    if old is not None:
        previous = old.digest if old.digest != msg.digest else (
            old.previous if old.previous != msg.digest else None)
    secrets = 0 if old is None else old.secrets
    if old is not None and old.digest == msg.digest and old.env_secrets != msg.env_secrets:
        secrets, previous = secrets + 1, msg.digest  # new env variables: roll the app out
    plan = Plan(app=msg.app, digest=msg.digest, min=msg.min, max=msg.max,
                warmup=float(msg.warmup), timeout=float(msg.timeout), generation=generation,
                published_at=now, previous=previous, secrets=secrets,
                env_secrets=tuple(msg.env_secrets), idle=msg.idle,
                target_concurrency=msg.target_concurrency,
                hosts=(old.hosts if old is not None else ()) if msg.hosts is None
                else tuple(msg.hosts))
    if msg.budget is not None:
        budget = Budget(app=msg.app, max_instances=msg.budget.max_instances,
                        cpu=float(msg.budget.cpu), mem=msg.budget.mem)
    elif budget is None:
        budget = Budget(app=msg.app, max_instances=msg.max, cpu=DeployDefaults.CPU,
                        mem=DeployDefaults.MEM)
    return plan, budget


def budget_of(msg: SetBudget) -> Budget:
    """The budget a :class:`SetBudget` asks for, once checked.

    Raises:
        BadPlan: with the precise reason.
    """
    check_budget(msg)
    return Budget(app=msg.app, max_instances=msg.max_instances, cpu=float(msg.cpu), mem=msg.mem)


def check_batch(batch: PublishBatch, plans: Mapping[str, Plan]) -> None:
    """What a batch must satisfy against the fabric's plans before any of it is checked further.

    Raises:
        BadPlan: a malformed batch, or a stop of an app without a plan.
        PlanMoved: an expected plan moved since the batch was computed.
    """
    check_batch_shape(batch)
    moved = moved_plans(plans, batch.expect)
    if moved:
        raise PlanMoved(moved_message(moved))
    for app in batch.stops:
        if app not in plans:
            raise BadPlan(f"no plan for app {app!r}")
