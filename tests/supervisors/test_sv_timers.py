"""The shared timers: one thread, timers in due order, cancellation, slack, errors logged."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator

import pytest

from supervisors.timers import Timers, shared_timers

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def timers() -> Iterator[Timers]:
    t = Timers(name="test-timers")
    yield t
    t.close()
    assert not t.running


def test_timers_fire_in_due_order_even_when_an_earlier_one_is_added_later(timers: Timers) -> None:
    fired: list[str] = []
    done = threading.Event()
    timers.call_later(0.3, lambda: (fired.append("late"), done.set()))
    timers.call_later(0.05, lambda: fired.append("early"))  # must wake the sleeping thread
    assert done.wait(5)
    assert fired == ["early", "late"]


def test_a_cancelled_timer_never_fires_and_cancelling_a_fired_one_is_harmless(
        timers: Timers) -> None:
    fired: list[str] = []
    done = threading.Event()
    gone = timers.call_later(0.05, lambda: fired.append("cancelled"))
    timers.cancel(gone)
    ran = timers.call_later(0.0, lambda: fired.append("ran"))
    timers.call_later(0.1, done.set)
    assert done.wait(5)
    ran.cancel()  # already ran: nothing happens
    assert fired == ["ran"]
    assert timers.pending == 0


def test_slack_puts_a_timer_on_the_next_multiple_of_the_slack(timers: Timers) -> None:
    fired: list[float] = []
    done = threading.Event()
    start = time.monotonic()
    timers.call_later(0.01, lambda: (fired.append(time.monotonic()), done.set()), slack=0.2)
    assert done.wait(5)
    assert fired[0] >= math.ceil((start + 0.01) / 0.2) * 0.2


def test_a_failing_callback_is_logged_with_its_traceback_and_the_thread_goes_on(
        timers: Timers, caplog: pytest.LogCaptureFixture) -> None:
    done = threading.Event()

    def broken() -> None:
        raise RuntimeError("a bug in a callback")

    with caplog.at_level(logging.ERROR, logger="supervisors.timers"):
        timers.call_later(0.0, broken)
        timers.call_later(0.01, done.set)
        assert done.wait(5)
    failed = [r for r in caplog.records if r.name == "supervisors.timers"]
    assert [r.getMessage() for r in failed] == ["test-timers: a timer callback failed"]
    assert failed[0].exc_info is not None and "a bug in a callback" in str(failed[0].exc_info[1])
    assert timers.running


def test_the_process_has_one_shared_timers() -> None:
    assert shared_timers() is shared_timers()


def test_a_timer_due_in_centuries_does_not_stop_the_thread(timers: Timers) -> None:
    # a wait beyond threading.TIMEOUT_MAX raises OverflowError: it once ended the thread, and
    # every later timer of the process silently never fired
    done = threading.Event()
    timers.call_later(1e12, lambda: None)
    timers.call_later(math.inf, lambda: None, slack=0.05)
    timers.call_later(0.05, done.set)
    assert done.wait(5)
    assert timers.running and timers.pending == 2
