"""The reaper: an exit is noticed at once, and a failing exit callback is logged, not fatal."""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Iterator

import pytest

from mycelium.node.reaper import Reaper

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    yield r
    r.close()
    assert not r.running


def test_a_failing_exit_callback_is_logged_and_the_next_exit_is_still_noticed(
        reaper: Reaper, caplog: pytest.LogCaptureFixture) -> None:
    first = subprocess.Popen(["sleep", "30"])
    second = subprocess.Popen(["sleep", "30"])
    reaped: list[int] = []
    broke, done = threading.Event(), threading.Event()

    def broken() -> None:
        reaped.append(first.wait())
        broke.set()
        raise RuntimeError("a bug in an exit callback")

    def good() -> None:
        reaped.append(second.wait())
        done.set()

    try:
        with caplog.at_level(logging.ERROR, logger="mycelium.node.reaper"):
            reaper.watch(first.pid, broken)
            first.kill()
            assert broke.wait(10)
            reaper.watch(second.pid, good)
            second.kill()
            assert done.wait(10)  # on the same thread, after the failure was logged
    finally:
        for child in (first, second):
            child.kill()
            child.wait(10)
    failed = [r for r in caplog.records if r.name == "mycelium.node.reaper"]
    assert [r.getMessage() for r in failed] == ["reaping a workload failed"]
    assert failed[0].exc_info is not None
    assert reaper.running
