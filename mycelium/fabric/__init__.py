"""The fabric: the mesh's control plane (budgets, plans, slots, endpoints; durable state).

The actor keeps its durable state behind :class:`Store` (embedded SQLite by default, an etcd
store later); the decisions it applies are pure (:mod:`.validate`, :mod:`.view`).

The names are resolved on first use (PEP 562), so that ``mycelium deploy``, which only needs
:mod:`.validate` to check its input, does not load the actor, Pykka and SQLite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import BadPlan, FabricError, NotRunning
    from .fabric import Fabric
    from .names import Names
    from .state import MemoryStore, SqliteStore, Store, StoredState
    from .validate import check_app_name, check_budget, check_digest, check_plan
    from .view import app_state, desired_count, routes, status_document

__all__ = [
    "BadPlan",
    "Fabric",
    "FabricError",
    "MemoryStore",
    "Names",
    "NotRunning",
    "SqliteStore",
    "Store",
    "StoredState",
    "app_state",
    "check_app_name",
    "check_budget",
    "check_digest",
    "check_plan",
    "desired_count",
    "routes",
    "status_document",
]

_HOMES = {
    "BadPlan": "errors", "FabricError": "errors", "NotRunning": "errors",
    "Fabric": "fabric", "Names": "names",
    "MemoryStore": "state", "SqliteStore": "state", "Store": "state", "StoredState": "state",
    "check_app_name": "validate", "check_budget": "validate", "check_digest": "validate",
    "check_plan": "validate",
    "app_state": "view", "desired_count": "view", "routes": "view", "status_document": "view",
}


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"mycelium.fabric.{module}"), name)
