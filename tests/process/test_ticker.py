"""The shared ticker: one thread, timers in due order, cancellation without leftovers."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import pytest

from mycelium.node.ticker import Ticker

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def ticker() -> Iterator[Ticker]:
    t = Ticker()
    yield t
    t.close()
    assert not t._thread.is_alive()


def test_timers_fire_in_due_order_even_when_an_earlier_one_is_added_later(ticker: Ticker) -> None:
    fired: list[str] = []
    done = threading.Event()
    ticker.call_later(0.3, lambda: (fired.append("late"), done.set()))
    ticker.call_later(0.05, lambda: fired.append("early"))  # must wake the sleeping thread
    assert done.wait(5)
    assert fired == ["early", "late"]


def test_a_cancelled_timer_never_fires_and_cancelling_a_fired_one_leaves_nothing(
        ticker: Ticker) -> None:
    fired: list[str] = []
    done = threading.Event()
    gone = ticker.call_later(0.05, lambda: fired.append("cancelled"))
    ticker.cancel(gone)
    ran = ticker.call_later(0.0, lambda: fired.append("ran"))
    ticker.call_later(0.1, done.set)
    assert done.wait(5)
    ticker.cancel(ran)  # already ran: nothing to remember
    assert fired == ["ran"]
    assert not ticker._cancelled and not ticker._pending


def test_slack_puts_a_timer_on_the_next_multiple_of_the_slack(ticker: Ticker) -> None:
    fired: list[float] = []
    done = threading.Event()
    start = time.monotonic()
    ticker.call_later(0.01, lambda: (fired.append(time.monotonic()), done.set()), slack=0.2)
    assert done.wait(5)
    assert fired[0] >= math.ceil((start + 0.01) / 0.2) * 0.2
