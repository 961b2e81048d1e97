"""The fabric's durable state behind a small :class:`Store` interface.

One machine uses :class:`SqliteStore` (an embedded SQLite database in WAL mode with
``synchronous=FULL``: a committed plan survives a kill -9 of the mesh and a power cut). A member
of a multi-machine mesh uses :class:`~mycelium.fabric.etcd.EtcdStore` through the same four
methods; nothing outside the fabric assumes the state is local.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import orjson

from mycelium.messages import Budget, Plan, from_wire, to_wire

__all__ = ["MemoryStore", "SqliteStore", "Store", "StoredState"]


class StoredState:
    """What a (re)started fabric recovers: every plan and budget by app."""

    __slots__ = ("budgets", "plans")

    def __init__(self, plans: dict[str, Plan], budgets: dict[str, Budget]) -> None:
        self.plans = plans
        self.budgets = budgets


class Store(Protocol):
    """Durable control-plane state. Every write is atomic and durable once it returns."""

    def load(self) -> StoredState:
        """Every plan and budget."""
        ...

    def save(self, plan: Plan | None, budget: Budget | None) -> None:
        """Write a plan and/or a budget in one transaction."""
        ...

    def delete(self, app: str) -> None:
        """Forget an app's plan (its budget stays, like a Nomad job's resources)."""
        ...

    def save_batch(self, writes: Sequence[tuple[Plan, Budget | None]], deletes: Sequence[str],
                   expect: Mapping[str, Plan | None]) -> bool:
        """Write plans (each with its budget, if changed) and delete plans, in one transaction,
        only if each app in ``expect`` still has that plan (``None``: none); False if not.

        A store with one writer (the fabric) may take ``expect`` as checked already.
        """
        ...

    def close(self) -> None:
        """Release the store (idempotent)."""
        ...



def open_tables(path: Path, *tables: str) -> sqlite3.Connection:
    """``path`` opened for durable writes (WAL, ``synchronous=FULL``, autocommit), with a
    ``(app TEXT PRIMARY KEY, body BLOB)`` table of each name in ``tables``.

    Raises:
        sqlite3.Error: the database cannot be opened.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    for table in tables:
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} (app TEXT PRIMARY KEY, body BLOB NOT NULL)")
    return db

class SqliteStore:
    """The embedded default store: ``<home>/state/fabric.db``, WAL, ``synchronous=FULL``.

    Raises:
        sqlite3.Error: the database cannot be opened (disk full, permissions).
    """

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_tables(path, "plans", "budgets")

    def load(self) -> StoredState:
        """Every plan and budget."""
        with self._lock:
            plans = {app: from_wire(orjson.loads(body))
                     for app, body in self._db.execute("SELECT app, body FROM plans")}
            budgets = {app: from_wire(orjson.loads(body))
                       for app, body in self._db.execute("SELECT app, body FROM budgets")}
        return StoredState(plans, budgets)

    def save(self, plan: Plan | None, budget: Budget | None) -> None:
        """Write a plan and/or a budget in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if plan is not None:
                    self._db.execute("INSERT OR REPLACE INTO plans VALUES (?, ?)",
                                     (plan.app, orjson.dumps(to_wire(plan))))
                if budget is not None:
                    self._db.execute("INSERT OR REPLACE INTO budgets VALUES (?, ?)",
                                     (budget.app, orjson.dumps(to_wire(budget))))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def delete(self, app: str) -> None:
        """Forget an app's plan."""
        with self._lock:
            self._db.execute("DELETE FROM plans WHERE app = ?", (app,))

    def save_batch(self, writes: Sequence[tuple[Plan, Budget | None]], deletes: Sequence[str],
                   expect: Mapping[str, Plan | None]) -> bool:
        """One transaction (one fsync for the whole batch); the fabric is the only writer, so
        ``expect`` was checked against its memory already."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for plan, budget in writes:
                    self._db.execute("INSERT OR REPLACE INTO plans VALUES (?, ?)",
                                     (plan.app, orjson.dumps(to_wire(plan))))
                    if budget is not None:
                        self._db.execute("INSERT OR REPLACE INTO budgets VALUES (?, ?)",
                                         (budget.app, orjson.dumps(to_wire(budget))))
                for app in deletes:
                    self._db.execute("DELETE FROM plans WHERE app = ?", (app,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._db.close()


class MemoryStore:
    """A non-durable store for pure tests of the fabric's logic."""

    def __init__(self) -> None:
        self._plans: dict[str, Plan] = {}
        self._budgets: dict[str, Budget] = {}

    def load(self) -> StoredState:
        """Every plan and budget."""
        return StoredState(dict(self._plans), dict(self._budgets))

    def save(self, plan: Plan | None, budget: Budget | None) -> None:
        """Keep a plan and/or a budget."""
        if plan is not None:
            self._plans[plan.app] = plan
        if budget is not None:
            self._budgets[budget.app] = budget

    def delete(self, app: str) -> None:
        """Forget an app's plan."""
        self._plans.pop(app, None)

    def save_batch(self, writes: Sequence[tuple[Plan, Budget | None]], deletes: Sequence[str],
                   expect: Mapping[str, Plan | None]) -> bool:
        """Keep and forget plans, if ``expect`` holds."""
        if any(self._plans.get(app) != plan for app, plan in expect.items()):
            return False
        for plan, budget in writes:
            self.save(plan, budget)
        for app in deletes:
            self.delete(app)
        return True

    def close(self) -> None:
        """Nothing to release."""
