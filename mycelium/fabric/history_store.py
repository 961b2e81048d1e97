"""Where the fabric keeps deployment histories: beside its plans, one record list per app.

One machine keeps them in its SQLite database (a table of its own, same WAL and fsync rules as
the plans); a member of a multi-machine mesh keeps them in etcd under ``history/<app>``, so every
member shows the same history. Each write replaces the app's whole (bounded) list: a history is
small, and one write per deployment event is what keeps it consistent.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import orjson

from .history import Deployment
from .state import open_tables

if TYPE_CHECKING:  # a single-host mesh never loads the etcd client (http.client, email: ~2 MB)
    from .etcd_client import EtcdClient

__all__ = ["EtcdHistory", "HistoryLog", "MemoryHistory", "SqliteHistory"]


class HistoryLog(Protocol):
    """Durable deployment histories by app."""

    def load(self, app: str) -> list[Deployment]:
        """The app's deployments, oldest first (none: empty)."""
        ...

    def save(self, app: str, records: list[Deployment]) -> None:
        """Replace the app's deployments (durable once it returns)."""
        ...

    def close(self) -> None:
        """Release the log (idempotent)."""
        ...


def _encode(records: list[Deployment]) -> bytes:
    return orjson.dumps([r.to_store() for r in records])


def _decode(body: bytes) -> list[Deployment]:
    return [Deployment.from_store(doc) for doc in orjson.loads(body)]


class MemoryHistory:
    """A non-durable history (pure tests, and a fabric built without a store for it)."""

    def __init__(self) -> None:
        self._by_app: dict[str, list[Deployment]] = {}

    def load(self, app: str) -> list[Deployment]:
        """The app's deployments."""
        return list(self._by_app.get(app, []))

    def save(self, app: str, records: list[Deployment]) -> None:
        """Keep the app's deployments."""
        self._by_app[app] = list(records)

    def close(self) -> None:
        """Nothing to release."""


class SqliteHistory:
    """The ``history`` table of ``<home>/state/fabric.db``.

    Raises:
        sqlite3.Error: the database cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_tables(path, "history")

    def load(self, app: str) -> list[Deployment]:
        """The app's deployments."""
        with self._lock:
            row = self._db.execute("SELECT body FROM history WHERE app = ?", (app,)).fetchone()
        return [] if row is None else _decode(row[0])

    def save(self, app: str, records: list[Deployment]) -> None:
        """Replace the app's deployments in one autocommitted statement."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO history VALUES (?, ?)",
                             (app, _encode(records)))

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._db.close()


class EtcdHistory:
    """Histories under ``<prefix>history/<app>`` in etcd (shared by every member)."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self._client = client
        self._prefix = prefix + "history/"

    def load(self, app: str) -> list[Deployment]:
        """The app's deployments."""
        kv = self._client.get(self._prefix + app)
        return [] if kv is None else _decode(kv.value)

    def save(self, app: str, records: list[Deployment]) -> None:
        """Replace the app's deployments."""
        self._client.put(self._prefix + app, _encode(records))

    def close(self) -> None:
        """The client belongs to the member's store: nothing to release."""
