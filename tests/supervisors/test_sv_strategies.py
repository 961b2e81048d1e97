"""Strategies and restart types, as OTP's supervisor_SUITE groups them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pykka
import pytest
from sv_helpers import Crash, Journal, Recorder, Worker, dead, ref_of, wait_until, worker

from supervisors import (
    Backoff,
    ChildSpec,
    SupFlags,
    restart_child,
    terminate_child,
    wait_exit,
    which_children,
)
from supervisors.messages import RestartDue, TerminateChild, WhichChildren

StartSup = Callable[..., pykka.ActorRef[Any]]


@pytest.fixture(autouse=True, params=[False, True], ids=["threaded", "pooled"])
def worker_runtime(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every strategy test runs with workers on threads of their own and on the pool."""
    monkeypatch.setattr(Worker, "pooled", request.param)


@pytest.mark.parametrize(
    ("strategy", "stopped", "restarted"),
    [
        ("one_for_one", [], ["B"]),
        ("one_for_all", ["C", "A"], ["A", "B", "C"]),
        ("rest_for_one", ["C"], ["B", "C"]),
    ],
)
def test_crashing_b_restarts_like_otp(
    strategy: str,
    stopped: list[str],
    restarted: list[str],
    start_sup: StartSup,
    journal: Journal,
    recorder: Recorder,
) -> None:
    sup = start_sup([worker(n, journal) for n in "ABC"], SupFlags(strategy, intensity=5))  # type: ignore[arg-type]
    before = {n: ref_of(sup, n) for n in "ABC"}
    journal.clear()
    before["B"].tell(Crash())
    recorder.wait("child_restarted", count=len(restarted))
    assert journal.of("failure") == ["B"]
    assert journal.of("stop") == stopped  # siblings stopped first, in reverse order
    assert journal.of("start") == restarted  # then started in order
    after = {n: ref_of(sup, n) for n in "ABC"}
    assert {n for n in "ABC" if after[n] != before[n]} == set(restarted)
    assert ref_of(sup, "B").ask("ping", timeout=5) == "pong"
    assert [r.child for r in recorder.events("child_terminated")] == ["B"]


EXITS = {
    "crash": lambda ref: ref.tell(Crash()),
    "normal": lambda ref: ref.tell("stop"),  # the worker calls self.stop()
    "external stop": lambda ref: ref.stop(block=False),
}
EXPECTED = {  # restart type -> exit kind -> restarted?
    "permanent": {"crash": True, "normal": True, "external stop": True},
    "transient": {"crash": True, "normal": False, "external stop": False},
    "temporary": {"crash": False, "normal": False, "external stop": False},
}


@pytest.mark.parametrize("exit_kind", list(EXITS))
@pytest.mark.parametrize("restart", list(EXPECTED))
def test_restart_type_by_exit_kind(
    restart: str, exit_kind: str, start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    sup = start_sup([worker("A", journal, restart=restart)], SupFlags(intensity=3))
    old = ref_of(sup, "A")
    EXITS[exit_kind](old)
    terminated = recorder.wait("child_terminated", "A")
    assert len(terminated) == 1
    assert terminated[0].reason == ("Crash: boom" if exit_kind == "crash" else "normal")
    if EXPECTED[restart][exit_kind]:
        recorder.wait("child_restarted", "A")
        assert ref_of(sup, "A") != old
    else:
        infos = which_children(sup)
        if restart == "temporary":
            assert infos == []  # forgotten once it exits
        else:
            assert [(i.id, i.status, i.ref) for i in infos] == [("A", "undefined", None)]
    assert dead(old)
    assert len(recorder.events("child_terminated", "A")) == 1  # exactly once


def test_a_temporary_sibling_stopped_by_a_restart_is_forgotten(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    sup = start_sup(
        [worker("A", journal), worker("T", journal, restart="temporary")],
        SupFlags("one_for_all", intensity=3),
    )
    ref_of(sup, "A").tell(Crash())
    recorder.wait("child_restarted", "A")
    assert [i.id for i in which_children(sup)] == ["A"]
    assert journal.of("stop") == ["T"]


def test_exception_reason_and_details_reach_the_report(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    sup = start_sup([worker("A", journal, meta={"app": "hello"})], SupFlags(intensity=3))
    crash = Crash(reason="mem_budget_exceeded: rss 300 MB > 256 MB", details={"rss_mb": 300})
    ref_of(sup, "A").tell(crash)
    report = recorder.wait("child_terminated", "A")[0]
    assert report.reason == "mem_budget_exceeded: rss 300 MB > 256 MB"
    assert report.extra == {"app": "hello", "rss_mb": 300}
    restarted = recorder.wait("child_restarted", "A")[0]
    assert restarted.extra == {"app": "hello", "restarts": 1}


def test_a_replacement_that_fails_to_start_is_retried_within_intensity(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    attempts: list[int] = []

    def flaky() -> pykka.ActorRef[Any]:
        attempts.append(1)
        return Worker.start(name="F", journal=journal, fail_start=len(attempts) == 2)

    sup = start_sup([ChildSpec("F", flaky)], SupFlags(intensity=5))
    ref_of(sup, "F").tell(Crash())
    recorder.wait("child_restarted", "F")
    assert [r.reason for r in recorder.events("start_error")] == ["no_start"]
    assert len(attempts) == 3
    wait_until(lambda: which_children(sup)[0].status == "running")


def test_a_failed_restart_leaves_the_rest_undefined_and_terminating_it_leaves_them_stopped(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    # OTP: in a rest_for_one restart whose child fails to start, the later siblings are
    # undefined (not restarting); terminate_child of the failing child leaves them stopped.
    sup_box: list[pykka.ActorRef[Any]] = []
    calls: list[int] = []
    during: list[pykka.Future[Any]] = []

    def b_start() -> pykka.ActorRef[Any]:
        calls.append(1)
        if len(calls) == 2:  # the replacement: queue a look and a terminate_child, then fail
            during.append(sup_box[0].ask(WhichChildren(), block=False))
            sup_box[0].tell(TerminateChild("B"))
            raise Crash("no", reason="no_restart")
        return Worker.start(name="B", journal=journal)

    children = [worker("A", journal), ChildSpec("B", b_start), worker("C", journal)]
    sup = start_sup(children, SupFlags("rest_for_one", intensity=5))
    sup_box.append(sup)
    ref_of(sup, "B").tell(Crash())
    recorder.wait("start_error", "B")
    looping = during[0].get(timeout=5)
    assert [(i.id, i.status) for i in looping] == [
        ("A", "running"), ("B", "restarting"), ("C", "undefined"),
    ]  # fmt: skip
    which_children(sup)  # the retry was queued before this ask: it has run after it
    assert [(i.id, i.status) for i in which_children(sup)] == [
        ("A", "running"), ("B", "undefined"), ("C", "undefined"),
    ]  # fmt: skip
    assert len(calls) == 2 and recorder.events("child_restarted") == []
    assert journal.of("start").count("C") == 1  # never started again


def test_terminating_the_crashed_child_during_its_backoff_leaves_its_group_stopped(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    slow = Backoff(base=30.0, cap=30.0, jitter=0.0)
    children = [worker("A", journal), worker("B", journal, backoff=slow), worker("C", journal)]
    sup = start_sup(children, SupFlags("rest_for_one", intensity=5))
    ref_of(sup, "B").tell(Crash())
    recorder.wait("backoff", "B")
    assert [i.status for i in which_children(sup)] == ["running", "restarting", "restarting"]
    terminate_child(sup, "B")
    assert [(i.id, i.status) for i in which_children(sup)] == [
        ("A", "running"), ("B", "undefined"), ("C", "undefined"),
    ]  # fmt: skip
    assert restart_child(sup, "C") is not None  # stopped, not waiting: it can be restarted


def test_a_crashing_supervisor_still_stops_its_children(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    sup = start_sup([worker("A", journal)])
    sup.tell(RestartDue(None, 1))  # type: ignore[arg-type]  # a bug: crashes it
    exit_ = wait_exit(sup, timeout=5)
    assert exit_ is not None and exit_.reason.startswith("TypeError")
    assert journal.of("stop") == ["A"]
    assert recorder.events("shutdown")[-1].reason == exit_.reason
