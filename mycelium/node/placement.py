"""Whether an app fits on a node, as pure functions beside :func:`mycelium.node.rollout.step`.

A node offers ``[node] cpu`` and ``mem_mb``; every app placed on it reserves its budget's cpu
and mem whatever its instances actually use, so a node never promises more than it has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mycelium.defaults import DeployDefaults
from mycelium.messages import Budget, Plan

__all__ = ["Usage", "decline_reason", "default_budget", "usage"]

_EPSILON = 1e-9  # cpu shares are floats: 0.1 * 3 must fit into 0.3


@dataclass(frozen=True, slots=True)
class Usage:
    """What the apps placed on a node reserve."""

    cpu: float = 0.0
    mem: int = 0


def usage(reservations: Iterable[tuple[float, int]]) -> Usage:
    """The sum of the (cpu, mem) reservations of the apps on a node."""
    cpu, mem = 0.0, 0
    for c, m in reservations:
        cpu, mem = cpu + c, mem + m
    return Usage(cpu, mem)


def default_budget(plan: Plan) -> Budget:
    """The budget of an app that has none yet: ``max`` instances of the deploy defaults."""
    return Budget(plan.app, plan.max, DeployDefaults.CPU, DeployDefaults.MEM)


def decline_reason(used: Usage, budget: Budget, cpu: float, mem_mb: int) -> str | None:
    """Why the node cannot take one more instance of ``budget``'s app; None if it fits."""
    if used.cpu + budget.cpu <= cpu + _EPSILON and used.mem + budget.mem <= mem_mb:
        return None
    return (f"node capacity: cpu {used.cpu:g}+{budget.cpu:g}/{cpu:g}, "
            f"mem {used.mem:g}+{budget.mem}/{mem_mb} MB")
