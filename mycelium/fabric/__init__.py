"""The fabric: the mesh's control plane (budgets, plans, slots, endpoints; durable state).

The actor keeps its durable state behind :class:`Store` (embedded SQLite by default, an etcd
store later); the decisions it applies are pure (:mod:`.validate`, :mod:`.view`).
"""

from __future__ import annotations

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
