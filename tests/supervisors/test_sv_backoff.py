"""Backoff, live: the child shows "restarting" while it waits, and every wait is reported."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pykka
import pytest
from sv_helpers import Crash, Journal, Recorder, ref_of, wait_until, worker

from supervisors import (
    Backoff,
    Restarting,
    SupFlags,
    delete_child,
    restart_child,
    terminate_child,
    which_children,
)

StartSup = Callable[..., pykka.ActorRef[Any]]


def test_a_child_waits_in_restarting_and_the_wait_is_reported(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    policy = Backoff(base=0.3, cap=5.0, jitter=0.0)
    spec = worker("A", journal, backoff=policy, meta={"app": "a"})
    sup = start_sup([spec], SupFlags(intensity=5))
    ref_of(sup, "A").tell(Crash())
    report = recorder.wait("backoff", "A")[0]
    assert report.delay == pytest.approx(0.3)
    assert report.reason == "Crash: boom" and report.extra == {"app": "a", "step": 0}
    info = which_children(sup)[0]
    assert (info.status, info.ref) == ("restarting", None)
    with pytest.raises(Restarting):
        restart_child(sup, "A")
    with pytest.raises(Restarting):
        delete_child(sup, "A")
    restarted = recorder.wait("child_restarted", "A")[0]
    assert restarted.ts - report.ts >= 0.29  # the supervisor did wait
    assert which_children(sup)[0].status == "running"


def test_delays_double_while_crashing_and_reset_after_a_stable_run(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    policy = Backoff(base=0.01, cap=0.04, jitter=0.0, reset_after=1.0)
    sup = start_sup([worker("A", journal, backoff=policy)], SupFlags(intensity=10, period=60))
    for n in range(1, 5):
        ref_of(sup, "A").tell(Crash())
        recorder.wait("child_restarted", "A", count=n)
    delays = [r.delay for r in recorder.events("backoff")]
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.04])
    stable_since = time.monotonic()
    wait_until(lambda: time.monotonic() - stable_since > 1.05)  # a stable run
    ref_of(sup, "A").tell(Crash())
    assert recorder.wait("backoff", "A", count=5)[-1].delay == pytest.approx(0.01)


def test_the_mailbox_stays_free_during_a_long_backoff(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    policy = Backoff(base=30.0, cap=30.0, jitter=0.0)
    sup = start_sup([worker("A", journal, backoff=policy), worker("B", journal)])
    ref_of(sup, "A").tell(Crash())
    recorder.wait("backoff", "A")
    began = time.monotonic()
    assert [i.status for i in which_children(sup, timeout=1)] == ["restarting", "running"]
    assert time.monotonic() - began < 1.0
    terminate_child(sup, "A")  # cancels the pending restart
    assert which_children(sup)[0].status == "undefined"
    restart_child(sup, "A")
    assert which_children(sup)[0].status == "running"


def test_backoff_restarts_count_against_intensity(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    policy = Backoff(base=0.01, cap=0.01, jitter=0.0)
    sup = start_sup([worker("A", journal, backoff=policy)], SupFlags(intensity=1, period=60))
    ref_of(sup, "A").tell(Crash())
    recorder.wait("child_restarted", "A")
    ref_of(sup, "A").tell(Crash())  # the 2nd restart within the period: over intensity 1
    recorder.wait("reached_max_restart_intensity", "A")
    assert sup.actor_stopped.wait(5)
    assert len(recorder.events("backoff")) == 1
