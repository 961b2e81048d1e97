"""What the browsers are sent: the SSE framing, the supervision log's history, the streams.

Loop-owned: a :class:`Feed` is used from the dashboard's event loop only (records from other
threads reach it through ``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import psutil

from .view import LogIndex

__all__ = ["HISTORY", "Feed", "dumps", "event", "process_start", "read_tail"]

#: Log records the page gets when it connects (the newest ones) and keeps in memory.
HISTORY = 500
_TAIL_BYTES = 512 * 1024
_QUEUE = 2000  # events a slow browser may lag behind before it is cut off (it reconnects)


def event(name: str, data: bytes) -> bytes:
    """One Server-Sent Event (``data`` is one line of JSON)."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def dumps(obj: Any) -> bytes:
    """JSON for the page; anything orjson does not know is shown as its ``str``."""
    return orjson.dumps(obj, default=str)


def read_tail(path: Path | None, limit: int = _TAIL_BYTES) -> list[dict[str, Any]]:
    """The whole records in the last ``limit`` bytes of a JSON-lines log, oldest first."""
    if path is None:
        return []
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            data = fh.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if size > limit:
        lines = lines[1:]  # the first one is cut
    out = []
    for line in lines:
        with contextlib.suppress(orjson.JSONDecodeError):
            rec = orjson.loads(line) if line.strip() else None
            if isinstance(rec, dict):
                out.append(rec)
    return out


@functools.cache
def process_start(pid: int) -> float | None:
    """When the process ``pid`` (the mesh) started, as epoch seconds."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return (record.get("ts"), record.get("event"), record.get("supervisor"), record.get("child"))


class Feed:
    """The open browser streams, the recent log records and what they say about each child.

    Args:
        history: How many records to keep (and send to a browser that connects).
        queue_size: Events one browser may lag behind before it is cut off.
    """

    def __init__(self, history: int = HISTORY, queue_size: int = _QUEUE) -> None:
        self.clients: set[asyncio.Queue[bytes | None]] = set()
        self.records: deque[dict[str, Any]] = deque(maxlen=history)
        self.index = LogIndex()
        self._recent: deque[tuple[Any, ...]] = deque(maxlen=64)
        self._queue_size = queue_size

    def remember(self, record: dict[str, Any]) -> bool:
        """Keep one record; False if it was already there (read from the file's tail and
        published too)."""
        key = _key(record)
        if key in self._recent:
            return False
        self._recent.append(key)
        self.records.append(record)
        self.index.add(record)
        return True

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        """A new browser's queue of events (``None`` ends its stream)."""
        q: asyncio.Queue[bytes | None] = asyncio.Queue(self._queue_size)
        self.clients.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[bytes | None]) -> None:
        """Forget a browser that went away."""
        self.clients.discard(q)

    def broadcast(self, chunk: bytes) -> None:
        """Queue an event for every browser; one that lags too far is cut off (it reconnects
        and starts again from the history)."""
        for q in list(self.clients):
            try:
                q.put_nowait(chunk)
            except asyncio.QueueFull:
                self.drop(q)

    def drop(self, q: asyncio.Queue[bytes | None]) -> None:
        """End one browser's stream."""
        self.clients.discard(q)
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)

    def close(self) -> None:
        """End every stream (shutdown)."""
        for q in list(self.clients):
            self.drop(q)
