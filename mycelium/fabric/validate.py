"""Boundary checks for plans and budgets (pure; STYLE §5: one check, one precise reason)."""

from __future__ import annotations

import math
import re

from mycelium.messages import PublishPlan, SetBudget

from .errors import BadPlan

__all__ = ["APP_NAME", "DIGEST", "check_app_name", "check_budget", "check_digest", "check_plan"]

APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")


def check_app_name(app: object) -> str:
    """The app name, if it is one (SPEC §4: ``^[a-z0-9][a-z0-9-]{0,62}$``).

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
    check_app_name(plan.app)
    check_digest(plan.digest)
    _number("min", plan.min, minimum=0, integer=True)
    _number("max", plan.max, minimum=1, integer=True)
    if plan.min > plan.max:
        raise BadPlan(f"--min {plan.min} is greater than --max {plan.max}")
    _number("warmup", plan.warmup, minimum=0, integer=False)
    _number("timeout", plan.timeout, minimum=0, integer=False)
    if plan.timeout <= 0:
        raise BadPlan(f"--timeout must be > 0, got {plan.timeout!r}")
    return plan


def check_budget(budget: SetBudget) -> SetBudget:
    """Refuse a budget with ``max_instances < 1`` or a negative/zero resource.

    Raises:
        BadPlan: with the precise reason.
    """
    check_app_name(budget.app)
    _number("max-instances", budget.max_instances, minimum=1, integer=True)
    _number("cpu", budget.cpu, minimum=0, integer=False)
    _number("mem", budget.mem, minimum=1, integer=True)
    return budget
