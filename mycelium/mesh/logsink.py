"""The supervision log sink: every supervisor's report, written, streamed and printed.

Supervisors report from their own threads and must never block on a disk or a terminal, so
:meth:`LogSink.report` only queues the record; one writer thread appends it to the supervision
log (``<home>/logs/supervision.jsonl``, rotated), hands it to the subscribers (the dashboard)
and prints its human-readable line. A failing subscriber or a closed stdout costs that record's
line, never the writer.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from mycelium.home import Home
from mycelium.operator import SupervisionLog, format_record
from supervisors import Report
from supervisors.reports import rfc3339

__all__ = ["LogSink", "record_of"]

Subscriber = Callable[[dict[str, Any]], None]


def record_of(report: Report) -> dict[str, Any]:
    """The supervision-log record of a report: ``app``, ``pid``, ``restarts``, ``instance``
    lifted from ``extra`` to the top level, where ``logs --app`` and the dashboard look."""
    record = report.to_dict()
    extra = record.get("extra") or {}
    record["app"] = extra.get("app")
    for key in ("pid", "restarts", "instance"):
        if key in extra:
            record[key] = extra[key]
    return record


class LogSink:
    """The writer of one mesh's supervision log.

    Args:
        home: Where the log lives.
        rotate_bytes: Rotate once the log is over this size.
        keep: Rotated files kept.
        out: Receives each human-readable line.
        color: ANSI colours in those lines (``up`` sets it when stdout is a terminal).
    """

    def __init__(self, home: Home, rotate_bytes: int, keep: int,
                 out: Callable[[str], None] = print, *, color: bool = False) -> None:
        self.home = home
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self.out = out
        self.color = color
        self._subscribers: list[Subscriber] = []
        self._lines: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._log: SupervisionLog | None = None
        self._writer: threading.Thread | None = None

    def start(self) -> None:
        """Open the log and start the writer thread."""
        self._log = SupervisionLog(self.home, self.rotate_bytes, self.keep)
        self._writer = threading.Thread(target=self._write_lines, name="mesh-log", daemon=True)
        self._writer.start()

    def report(self, report: Report) -> None:
        """A supervisor's reporter: queue the report's record (never blocks)."""
        self._lines.put(record_of(report))

    def note(self, event: str, reason: str) -> None:
        """Log a mesh-level event that no supervisor reports (e.g. a ``warning``)."""
        self._lines.put({"ts": rfc3339(time.time()), "event": event, "supervisor": "mesh",
                         "child": None, "reason": reason, "delay": None, "extra": {},
                         "app": None})

    def subscribe(self, subscriber: Subscriber) -> None:
        """Also hand every later record to ``subscriber`` (called in the writer thread)."""
        self._subscribers = [*self._subscribers, subscriber]

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop handing records to ``subscriber`` (no-op if it was not subscribed)."""
        self._subscribers = [s for s in self._subscribers if s is not subscriber]

    def close(self) -> None:
        """Write what is queued, stop the writer, close the log (idempotent)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._lines.put(None)
            writer.join(5.0)
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def _write_lines(self) -> None:
        while True:
            record = self._lines.get()
            if record is None:
                return
            with contextlib.suppress(Exception):
                if self._log is not None:
                    self._log.write(record)
                for subscriber in self._subscribers:  # a snapshot: (un)subscribe replaces it
                    with contextlib.suppress(Exception):
                        subscriber(record)
                self.out(format_record(record, color=self.color))
