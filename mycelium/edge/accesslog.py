"""The edge's access log: one JSON object per answered request, written off the loop.

The request path only appends a tuple to a list (no lock, no encoding, no disk): the edge's
sweeper hands the batch to a writer thread every tick, or sooner once it is large. The thread
encodes the batch and appends it to ``<home>/logs/access.jsonl`` with one write, rotated like
the supervision log (the same file logic: :class:`~mycelium.operator.logs.SupervisionLog`).
A disk that stalls stalls the writer thread, never the loop; batches queue meanwhile.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from mycelium._logger import get_logger
from mycelium.edge.config import ACCESS_LOG_NAME

__all__ = ["FIELDS", "AccessLog", "LineSink", "access_record", "format_access", "in_time_order"]

log = get_logger(__name__)

FIELDS = ("ts", "client", "method", "host", "path", "status", "bytes", "ms", "app",
          "instance", "retries")
"""The keys of every access log record, in order."""

_FLUSH_ENTRIES = 512
"""Entries that make the loop hand a batch over before the next tick."""

Entry = tuple[float, str, str | None, bytes | None, str | None, int, int, float, str | None,
              str | None, int]


class _Clock:
    """RFC 3339 timestamps with milliseconds, the second's prefix formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._milli = -1
        self._text = ""

    def format(self, ts: float) -> str:
        milli = int(ts * 1000)
        if milli == self._milli:  # under load, many requests end in the same millisecond
            return self._text
        second, ms = divmod(milli, 1000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        self._milli = milli
        self._text = f"{self._prefix}.{ms:03d}Z"
        return self._text


def access_record(entry: Entry, clock: _Clock | None = None) -> dict[str, Any]:
    """The JSON object of one logged request (``ts`` RFC 3339, ``ms`` rounded to µs)."""
    ts, client, method, host, path, status, nbytes, ms, app, instance, retries = entry
    return {"ts": (clock or _Clock()).format(ts), "client": client, "method": method,
            "host": host.decode("latin-1") if host is not None else None, "path": path,
            "status": status, "bytes": nbytes, "ms": round(ms, 3), "app": app or None,
            "instance": instance, "retries": retries}


def in_time_order(records: Iterable[dict[str, Any]],
                  window: int = 10_000) -> Iterator[dict[str, Any]]:
    """``records`` sorted by ``ts``, given that each is out of place by fewer than ``window``
    records: edge worker processes hand their batches over every half second, so their lines
    interleave by batch in the file. Streams (a heap of ``window`` records at most)."""
    heap: list[tuple[str, int, dict[str, Any]]] = []
    for n, record in enumerate(records):
        heapq.heappush(heap, (str(record.get("ts", "")), n, record))
        if len(heap) > window:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def _local_clock(ts: Any) -> str:
    """``HH:MM:SS.mmm`` in local time from an RFC 3339 string (anything else as it is)."""
    try:
        moment = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return str(ts)
    return moment.astimezone().strftime("%H:%M:%S.%f")[:-3]


def format_access(record: Mapping[str, Any]) -> str:
    """One access log record as one human-readable line."""
    app = record.get("app") or "-"
    instance = record.get("instance") or "-"
    retries = record.get("retries") or 0
    tail = f" retries={retries}" if retries else ""
    return (f"{_local_clock(record.get('ts'))} {record.get('client') or '-'} "
            f"{record.get('method') or '-'} {record.get('host') or '-'} "
            f"{record.get('path') or '-'} {record.get('status')} {record.get('bytes')}B "
            f"{record.get('ms')}ms {app} {instance}{tail}")


class LineSink(Protocol):
    """Where encoded access log lines go: the log file, or an edge worker's parent."""

    def write_lines(self, line: bytes) -> None:
        """Append encoded JSON lines."""

    def close(self) -> None:
        """No more lines."""


class AccessLog:
    """Appends the edge's requests to ``<home>/logs/access.jsonl``.

    :meth:`add` and :meth:`flush` are called on the edge's loop thread only; a private
    thread does the encoding and the writing.

    Args:
        home: The mesh home.
        rotate_bytes: Size at which the file rotates (as the supervision log).
        keep: Rotated files kept.
        sink: Where the encoded lines go instead of the file (an edge worker hands them to
            the edge actor, which writes the one file).
    """

    def __init__(self, home: Path, rotate_bytes: int, keep: int,
                 sink: LineSink | None = None) -> None:
        self.file: LineSink
        if sink is None:
            from mycelium.operator.logs import SupervisionLog

            self.file = SupervisionLog(home, rotate_bytes, keep, name=ACCESS_LOG_NAME)
        else:
            self.file = sink
        self._pending: list[Entry] = []
        self._batches: queue.SimpleQueue[list[Entry] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="edge-access-log",
                                        daemon=True)
        self._thread.start()
        self._closed = False

    def add(self, client: str, method: str | None, host: bytes | None, path: str | None,
            status: int, nbytes: int, ms: float, app: str | None, instance: str | None,
            retries: int) -> None:
        """Note one answered request (the loop thread only; no I/O here)."""
        pending = self._pending
        pending.append((time.time(), client, method, host, path, status, nbytes, ms, app,
                        instance, retries))
        if len(pending) >= _FLUSH_ENTRIES:
            self.flush()

    def flush(self) -> None:
        """Hand what was noted so far to the writer thread."""
        if self._pending and not self._closed:
            self._batches.put(self._pending)
            self._pending = []

    def close(self, timeout: float = 5.0) -> None:
        """Write what is left and stop the writer thread (idempotent)."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._batches.put(None)
        self._thread.join(timeout)
        self.file.close()

    def _write(self) -> None:
        clock = _Clock()
        while True:
            batch = self._batches.get()
            if batch is None:
                return
            data = b"".join([orjson.dumps(access_record(entry, clock)) + b"\n"
                             for entry in batch])
            try:
                self.file.write_lines(data)
            except Exception as exc:  # a full disk costs log lines, never requests
                log.warning("edge: cannot write the access log: %s", exc)
