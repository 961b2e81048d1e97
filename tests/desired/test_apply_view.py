"""``apply``'s progress views and summary table (pure rendering)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from mycelium.cli.apply_view import LiveView, PlainView, summary
from mycelium.cli.applying import Outcome


def test_the_live_table_shows_every_app_and_its_standing() -> None:
    buf = io.StringIO()
    view = LiveView(Console(file=buf, force_terminal=True, width=100))
    hello, gone = Outcome("hello", "update"), Outcome("old", "destroy")
    view.start([hello, gone])
    hello.ready, hello.desired, hello.state = 1, 3, "updating"
    view.change(hello)
    hello.result, hello.took = "ok", 1.25
    view.change(hello)
    gone.result, gone.detail = "failed", "deployed again meanwhile"
    view.change(gone)
    view.stop()
    text = buf.getvalue()
    for part in ("hello", "update", "ok in 1.25s", "old", "destroy",  # the last drawing
                 "failed: deployed again meanwhile"):
        assert part in text, part


def test_plain_lines_say_each_change(capsys: pytest.CaptureFixture[str]) -> None:
    view = PlainView()
    view.change(Outcome("hello", "create", ready=0, desired=1, state="starting"))
    view.change(Outcome("hello", "create", result="ok", ready=1, desired=1, took=0.5))
    view.change(Outcome("x", "update", result="failed", detail="rolled back: boom"))
    assert capsys.readouterr().err.splitlines() == [
        "hello: 0/1 Ready (starting)", "hello: create ok in 0.50s",
        "x: update failed: rolled back: boom"]


def test_the_summary_is_a_table_and_a_totals_line() -> None:
    lines = summary([Outcome("hello", "update", "ok", ready=3, desired=3, took=2.5),
                     Outcome("broken", "create", "timed out", "0/1 Ready (crashloop) after 65s",
                             0, 1, 65.0)], 65.2)
    assert lines == [
        "APP     ACTION  RESULT                                      READY  TOOK",
        "hello   update  ok                                          3/3    2.50s",
        "broken  create  timed out: 0/1 Ready (crashloop) after 65s  0/1    65.00s",
        "applied 2 changes in 65.20s: 1 ok, 1 failed (broken)"]
