"""What the edge's worker pool says about its workers: restart delays, exit reasons, and the
supervision-log records the workers send over their pipe (pure functions)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Mapping
from typing import Any

from supervisors.reports import Report

__all__ = ["exit_reason", "report_from_wire", "restart_delay"]


def restart_delay(consecutive: int) -> float:
    """Seconds before restarting a worker that died ``consecutive`` times in a row (≥ 1)."""
    return min(5.0, 0.05 * 2 ** max(0, consecutive - 1))


def exit_reason(code: int | None) -> str:
    """A worker's exit status in words (``killed by SIGKILL``, ``exit code 1``; None: an
    adopted worker, not our child, whose status is not ours to read)."""
    if code is None:
        return "exited (an adopted worker: its exit status is not ours to read)"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def report_from_wire(data: Mapping[str, Any]) -> Report | None:
    """A worker's ``{"report": {...}}`` as a Report; ``None`` when it is malformed."""
    try:
        return Report(ts=float(data["ts"]), event=str(data["event"]),
                      supervisor=str(data["supervisor"]), child=data.get("child"),
                      reason=data.get("reason"), delay=data.get("delay"),
                      extra=dict(data.get("extra") or {}))
    except (KeyError, TypeError, ValueError):
        return None
