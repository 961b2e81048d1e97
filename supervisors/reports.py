"""Supervisor reports as data: one record type, a JSON writer and a human formatter.

OTP logs supervisor reports as structured terms and formats them separately; here a
:class:`Report` is the record, :meth:`Report.to_json` the machine form and
:func:`format_report` the one-line human form.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["EVENTS", "EVENT_COLORS", "Report", "Reporter", "emit", "format_report", "rfc3339"]

logger = logging.getLogger("supervisors")

EVENTS = (
    "started",
    "child_terminated",
    "child_restarted",
    "backoff",
    "start_error",
    "reached_max_restart_intensity",
    "shutdown",
)

#: The ANSI colour of each event in a human-readable line (events not listed stay plain).
EVENT_COLORS = {
    "started": "\x1b[32m",
    "child_restarted": "\x1b[32m",
    "child_terminated": "\x1b[33m",
    "backoff": "\x1b[36m",
    "shutdown": "\x1b[2m",
    "start_error": "\x1b[31m",
    "reached_max_restart_intensity": "\x1b[1;31m",
}
_RESET = "\x1b[0m"


def rfc3339(ts: float) -> str:
    """Epoch seconds as an RFC 3339 UTC timestamp with milliseconds (``…T…Z``)."""
    text = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Report:
    """One supervisor event.

    Attributes:
        ts: Wall-clock time of the event, epoch seconds.
        event: One of :data:`EVENTS`.
        supervisor: The reporting supervisor's path in the tree (e.g. ``mesh/nodes/node-1``).
        child: The child id, or ``None`` for events about the supervisor itself.
        reason: Why (exit reason, start error), or ``None``.
        delay: Seconds waited before a restart (``backoff`` only), else ``None``.
        extra: The child spec's meta, exception details, ``restarts`` for child_restarted.
    """

    ts: float
    event: str
    supervisor: str
    child: str | None = None
    reason: str | None = None
    delay: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-able dict, ``ts`` as an RFC 3339 string."""
        return {
            "ts": rfc3339(self.ts),
            "event": self.event,
            "supervisor": self.supervisor,
            "child": self.child,
            "reason": self.reason,
            "delay": self.delay,
            "extra": dict(self.extra),
        }

    def to_json(self) -> bytes:
        """The report as one orjson-encoded object (values orjson cannot encode become str)."""
        return orjson.dumps(self.to_dict(), default=str)


Reporter = Callable[[Report], None]


def format_report(report: Report, color: bool = False) -> str:
    """One short OTP-like line: time, supervisor, event, child, reason, delay.

    Args:
        report: The report.
        color: Colour the event name with ANSI escapes (for terminals).

    Returns:
        E.g. ``2026-11-27T02:40:00.123Z mesh/apps child_terminated child=hello reason=boom``.
    """
    event = report.event
    if color:
        event = f"{EVENT_COLORS.get(event, '')}{event}{_RESET}"
    parts = [rfc3339(report.ts), report.supervisor, event]
    if report.child is not None:
        parts.append(f"child={report.child}")
    if report.reason is not None:
        parts.append(f"reason={report.reason}")
    if report.delay is not None:
        parts.append(f"delay={report.delay:.3f}s")
    if "restarts" in report.extra:
        parts.append(f"restarts={report.extra['restarts']}")
    return " ".join(parts)


def emit(reporter: Reporter | None, report: Report) -> None:
    """Log a report and hand it to the reporter; a failing reporter never hurts a supervisor."""
    failures = ("start_error", "reached_max_restart_intensity")
    level = logging.ERROR if report.event in failures else logging.INFO
    if logger.isEnabledFor(level):
        logger.log(level, "%s", format_report(report))
    if reporter is None:
        return
    try:
        reporter(report)
    except Exception:
        logger.exception("supervisor reporter failed on %s", report.event)
