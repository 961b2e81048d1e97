"""Boundary checks for plans and budgets (pure: one check, one precise reason)."""

from __future__ import annotations

import math
import re

from .errors import BadPlan

TYPE_CHECKING = False  # not typing's: `mycelium deploy` checks its input here, and starts fast
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from mycelium.messages import Plan, PublishPlan, SetBudget

__all__ = [
    "APP_NAME",
    "DIGEST",
    "check_app_name",
    "check_budget",
    "check_budget_fields",
    "check_digest",
    "check_hosts",
    "check_plan",
    "check_plan_fields",
    "check_publish",
    "check_scale_fields",
    "host_names",
    "host_owners",
]

APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")


def check_app_name(app: object) -> str:
    """The app name, if it is one (``^[a-z0-9][a-z0-9-]{0,62}$``).

    Raises:
        BadPlan: not a valid app name.
    """
    if not isinstance(app, str) or not APP_NAME.match(app):
        raise BadPlan(f"bad app name {app!r}: expected ^[a-z0-9][a-z0-9-]{{0,62}}$")
    return app


def check_digest(digest: object) -> str:
    """A full digest: 64 lowercase hex characters.

    Raises:
        BadPlan: not a digest.
    """
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise BadPlan(f"bad digest {digest!r}: expected 64 lowercase hex characters")
    return digest


def _number(name: str, value: object, *, minimum: float, integer: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadPlan(f"--{name} must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise BadPlan(f"--{name} must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise BadPlan(f"--{name} must be finite, got {value!r}")
    if value < minimum:
        low = "negative" if minimum == 0 else f"below {minimum:g}"
        raise BadPlan(f"--{name} must be >= {minimum:g}, got {value!r} ({low})")


def check_plan(plan: PublishPlan) -> PublishPlan:
    """Refuse a plan that cannot be meant: ``min > max``, ``max < 1``, negative numbers.

    Raises:
        BadPlan: with the precise reason.
    """
    check_plan_fields(plan.app, plan.digest, plan.min, plan.max, plan.warmup, plan.timeout)
    check_scale_fields(plan.min, plan.idle, plan.target_concurrency)
    return plan


def check_scale_fields(n_min: object, idle: object, target_concurrency: object) -> None:
    """``--idle`` and ``--target-concurrency``: positive when given (``--idle`` only matters with
    ``--min 0``).

    Raises:
        BadPlan: with the precise reason.
    """
    for name, value in (("idle", idle), ("target-concurrency", target_concurrency)):
        if value is None:
            continue
        _number(name, value, minimum=0, integer=False)
        if value <= 0:  # type: ignore[operator]  # a number by now
            raise BadPlan(f"--{name} must be > 0, got {value!r}")



def check_plan_fields(app: object, digest: object, n_min: object, n_max: object,
                      warmup: object, timeout: object) -> None:
    """:func:`check_plan` on the plan's fields (no message built: the CLI's input check).

    Raises:
        BadPlan: with the precise reason.
    """
    check_app_name(app)
    check_digest(digest)
    _number("min", n_min, minimum=0, integer=True)
    _number("max", n_max, minimum=1, integer=True)
    if n_min > n_max:  # type: ignore[operator]  # both are numbers by now
        raise BadPlan(f"--min {n_min} is greater than --max {n_max}")
    _number("warmup", warmup, minimum=0, integer=False)
    _number("timeout", timeout, minimum=0, integer=False)
    if timeout <= 0:  # type: ignore[operator]  # a number by now
        raise BadPlan(f"--timeout must be > 0, got {timeout!r}")


def check_budget(budget: SetBudget) -> SetBudget:
    """Refuse a budget with ``max_instances < 1`` or a negative/zero resource.

    Raises:
        BadPlan: with the precise reason.
    """
    check_budget_fields(budget.app, budget.max_instances, budget.cpu, budget.mem)
    return budget


def check_budget_fields(app: object, max_instances: object, cpu: object, mem: object) -> None:
    """:func:`check_budget` on the budget's fields (no message built).

    Raises:
        BadPlan: with the precise reason.
    """
    check_app_name(app)
    _number("max-instances", max_instances, minimum=1, integer=True)
    _number("cpu", cpu, minimum=0, integer=False)
    _number("mem", mem, minimum=1, integer=True)


def host_names(hosts: object) -> tuple[str, ...]:
    """``deploy --host`` values as the names an app owns: lower-case, deduplicated, sorted;
    one empty value (``--host ''``) means none.

    Raises:
        BadPlan: not a list of host names (exact, or ``*.suffix``).
    """
    from mycelium.edge.hosts import valid_host_name  # imported late: deploy starts fast

    if not isinstance(hosts, (list, tuple)) or not all(isinstance(h, str) for h in hosts):
        raise BadPlan(f"hosts must be a list of host names, got {hosts!r}")
    names = {h.strip().lower().rstrip(".") for h in hosts} - {""}
    for name in sorted(names):
        if not valid_host_name(name):
            raise BadPlan(f"bad host name {name!r}: expected a DNS name or *.suffix")
    return tuple(sorted(names))


def host_owners(plans: Mapping[str, Plan], publish: Sequence[PublishPlan] = (),
                stops: Sequence[str] = ()) -> dict[str, tuple[str, ...]]:
    """Every app's host names once ``publish`` and ``stops`` are applied over ``plans``."""
    owners = {app: plan.hosts for app, plan in plans.items() if app not in stops}
    for msg in publish:  # hosts a plan gives replace the app's current ones
        if msg.hosts is not None:
            owners[msg.app] = tuple(msg.hosts)
    return owners


def check_hosts(plan: PublishPlan, owners: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse host names that are not names, or that another app owns (one app per name).

    Args:
        plan: The plan being published (``hosts`` None: it keeps its names, nothing to check).
        owners: Every app's host names (:func:`host_owners`).

    Raises:
        BadPlan: a bad name, or a name taken (naming its owner).
    """
    if plan.hosts is None:
        return
    hosts = set(host_names(list(plan.hosts)))
    for other, names in sorted(owners.items()):
        taken = sorted(set(names) & hosts) if other != plan.app else []
        if taken:
            raise BadPlan(f"host {taken[0]!r} already belongs to app {other!r}")


def check_publish(msg: PublishPlan, plans: Mapping[str, Plan],
                  digest_known: Callable[[str], bool],
                  owners: Mapping[str, tuple[str, ...]] | None = None) -> None:
    """Refuse a plan to publish over ``plans``: its fields, its host names (``owners``, by
    default those of ``plans``), its budget's, and a digest the repository does not hold.

    Raises:
        BadPlan: the first reason.
    """
    check_plan(msg)
    check_hosts(msg, host_owners(plans) if owners is None else owners)
    if msg.budget is not None:
        check_budget(msg.budget)
        if msg.budget.app != msg.app:
            raise BadPlan(f"budget for {msg.budget.app!r} sent with the plan of {msg.app!r}")
    if not digest_known(msg.digest):
        raise BadPlan(f"unknown digest {msg.digest}: publish the spore first")
