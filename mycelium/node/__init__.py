"""One node of the mesh (Flows B, D, E): its agent, its app instances, their OS processes.

``process`` spawns, watches, signals and reaps workload processes; ``instance`` is the
AppInstance actor owning one of them; ``rollout`` is blue/green as a pure function;
``agent`` follows plans and applies rollouts on its node; ``leftovers`` stops what a dead
mesh left running.
"""

from __future__ import annotations

from .agent import Agent
from .instance import AppInstance, InstanceFailed, InstanceSpec
from .leftovers import reap_home
from .process import ProcessRecord, Workload, reap_leftovers, spawn
from .rollout import step
from .settings import NodeSettings, SporeInfo

__all__ = [
    "Agent",
    "AppInstance",
    "InstanceFailed",
    "InstanceSpec",
    "NodeSettings",
    "ProcessRecord",
    "SporeInfo",
    "Workload",
    "reap_home",
    "reap_leftovers",
    "spawn",
    "step",
]
