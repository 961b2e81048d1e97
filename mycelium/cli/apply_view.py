"""``mycelium apply``'s progress on stderr and its summary table on stdout.

On a terminal the progress is a live table (rich, which comes with Typer), one row per app,
redrawn as the rollouts move; otherwise it is plain lines, one whenever an app's count of
Ready instances or its outcome changes (``hello: 2/3 Ready (updating)``,
``hello: ok in 2.31s``), so that logs and scripts read it in order.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from .applying import Outcome
from .lines import err

__all__ = ["LiveView", "PlainView", "make_view", "summary"]


class PlainView:
    """Progress as plain lines on stderr."""

    def start(self, outcomes: Sequence[Outcome]) -> None:
        """Nothing to draw before the first change."""

    def change(self, out: Outcome) -> None:
        """One line for the app's new standing."""
        if out.result == "waiting":
            if out.action == "destroy":
                err(f"{out.app}: {out.ready} instance(s) stopping")
            else:
                err(f"{out.app}: {out.ready}/{out.desired} Ready ({out.state})")
        elif out.result == "ok":
            err(f"{out.app}: {out.action} ok in {out.took:.2f}s")
        else:
            err(f"{out.app}: {out.action} {out.result}: {out.detail}")

    def line(self, text: str) -> None:
        """A blue/green phase of one node."""
        err(text)

    def stop(self) -> None:
        """Nothing to clear."""


class LiveView:
    """Progress as a live table on the terminal (stderr), cleared when done.

    Args:
        console: Where to draw (a rich ``Console``; default: stderr).
    """

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = console or Console(stderr=True)
        self._rows: dict[str, Outcome] = {}
        self._live = Live(console=self._console, refresh_per_second=10, transient=True,
                          auto_refresh=True)

    def start(self, outcomes: Sequence[Outcome]) -> None:
        """Show one row per app."""
        for out in outcomes:
            self._rows[out.app] = out
        self._live.start()
        self._live.update(self._table())

    def change(self, out: Outcome) -> None:
        """Redraw with the app's new standing."""
        self._rows[out.app] = out
        self._live.update(self._table())

    def line(self, text: str) -> None:
        """Phases are what the table shows already."""

    def stop(self) -> None:
        """Clear the table (the summary follows on stdout)."""
        self._live.stop()

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("app", "action", "ready", "state"):
            table.add_column(column)
        colours = {"ok": "green", "waiting": "yellow"}
        for out in self._rows.values():
            if out.result == "waiting":
                text = out.state or "publishing"
            elif out.result == "ok":
                text = f"ok in {out.took:.2f}s"
            else:
                text = f"{out.result}: {out.detail}"
            ready = str(out.ready) if out.action == "destroy" else f"{out.ready}/{out.desired}"
            table.add_row(out.app, out.action, ready,
                          f"[{colours.get(out.result, 'red')}]{_escape(text)}[/]")
        return table


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def make_view() -> PlainView | LiveView:
    """A live table on a terminal, plain lines otherwise."""
    return LiveView() if sys.stderr.isatty() else PlainView()


def summary(outcomes: Sequence[Outcome], took: float) -> list[str]:
    """The table printed at the end: one row per changed app, then a totals line."""
    rows = [("APP", "ACTION", "RESULT", "READY", "TOOK")]
    for out in outcomes:
        result = out.result if not out.detail else f"{out.result}: {out.detail}"
        ready = str(out.ready) if out.action == "destroy" else f"{out.ready}/{out.desired}"
        rows.append((out.app, out.action, result, ready, f"{out.took:.2f}s"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
             for row in rows]
    failed = [o.app for o in outcomes if o.result != "ok"]
    ok = len(outcomes) - len(failed)
    line = f"applied {len(outcomes)} change{'s' if len(outcomes) != 1 else ''} in {took:.2f}s: " \
           f"{ok} ok"
    if failed:
        line += f", {len(failed)} failed ({', '.join(failed)})"
    return [*lines, line]
