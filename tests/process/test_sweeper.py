"""The sweeper: a crashed instance's sweep runs off the caller's thread, in order, and the
mesh's shutdown can wait for every pending one."""

from __future__ import annotations

import threading

from mycelium.node.sweeper import sweep_later, wait_swept


def test_sweeps_run_in_order_on_another_thread() -> None:
    ran: list[tuple[int, str]] = []
    gate = threading.Event()
    sweep_later(lambda: (gate.wait(10), ran.append((0, threading.current_thread().name))), 0)
    sweep_later(lambda: ran.append((1, threading.current_thread().name)), 0)
    assert not wait_swept(timeout=0.05)  # the first one waits on the gate: still pending
    gate.set()
    assert wait_swept(timeout=10)
    assert [n for n, _ in ran] == [0, 1]
    assert all(name.startswith("mycelium-sweep") for _, name in ran)


def test_a_failing_sweep_is_logged_and_the_next_still_runs() -> None:
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom")

    sweep_later(boom)
    sweep_later(done.set)
    assert wait_swept(timeout=10)
    assert done.is_set()


def test_a_delayed_sweep_waits_and_wait_swept_runs_it_at_once() -> None:
    done = threading.Event()
    sweep_later(done.set, delay=60)
    assert not done.wait(0.05)  # not before its delay
    assert wait_swept(timeout=10)  # the shutdown does not wait out the delay
    assert done.is_set()
