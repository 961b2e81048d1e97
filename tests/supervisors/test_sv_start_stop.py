"""Starting and stopping: order, start errors undone, shutdown policies, misuse."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
import pytest
from sv_helpers import Crash, Journal, Recorder, Worker, dead, worker

from supervisors import (
    ChildSpec,
    SpecError,
    StartError,
    Supervisor,
    SupervisorError,
    SupervisorNotRunning,
    SupFlags,
    wait_exit,
    which_children,
)

StartSup = Callable[..., pykka.ActorRef[Any]]


def test_children_start_in_order_and_stop_in_reverse(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    ref = start_sup([worker(n, journal) for n in "ABC"])
    assert journal.of("start") == ["A", "B", "C"]
    assert [c.status for c in which_children(ref)] == ["running"] * 3
    assert ref.stop(block=True, timeout=5)
    assert journal.of("stop") == ["C", "B", "A"]
    assert [r.child for r in recorder.events("started")] == ["A", "B", "C"]
    assert recorder.events("shutdown")[-1].reason == "shutdown"


def test_start_returns_only_after_every_child_started(journal: Journal) -> None:
    ref = Supervisor.start(SupFlags(), [worker(n, journal) for n in "AB"], path="p")
    try:
        assert journal.of("start") == ["A", "B"]  # no waiting needed: start is synchronous
    finally:
        ref.stop(block=True, timeout=5)


@pytest.mark.parametrize("how", ["on_start raises", "start raises", "not a SupervisedActor"])
def test_a_failed_start_stops_the_started_children_in_reverse_and_names_the_child(
    how: str, journal: Journal, recorder: Recorder
) -> None:
    def boom() -> pykka.ActorRef[Any]:
        raise Crash("no luck", reason="no_luck")

    bad = {
        "on_start raises": worker("C", journal, fail_start=True),
        "start raises": ChildSpec("C", boom),
        "not a SupervisedActor": ChildSpec("C", pykka.ThreadingActor.start),
    }[how]
    children = [worker("A", journal), worker("B", journal), bad, worker("D", journal)]
    with pytest.raises(StartError) as info:
        Supervisor.start(SupFlags(), children, path="p", reporter=recorder)
    assert info.value.child_id == "C"
    expected = {
        "on_start raises": "no_start",
        "start raises": "no_luck",
        "not a SupervisedActor": "SupervisedActor",
    }[how]
    assert expected in info.value.reason
    assert journal.of("start") == ["A", "B"]
    assert journal.of("stop") == ["B", "A"]
    assert recorder.wait("start_error")[0].child == "C"


def test_invalid_children_raise_before_anything_starts(journal: Journal) -> None:
    with pytest.raises(SpecError, match="duplicate child id 'A'"):
        Supervisor.start(SupFlags(), [worker("A", journal), worker("A", journal)])
    with pytest.raises(SpecError, match="flags must be a SupFlags"):
        Supervisor.start("one_for_one", [])
    with pytest.raises(SpecError, match="children must be a list of ChildSpec"):
        Supervisor.start(SupFlags(), worker("A", journal))
    assert journal.entries == []


@pytest.mark.timeout(20)
def test_a_child_that_does_not_stop_in_time_is_killed_and_shutdown_goes_on(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    release = threading.Event()
    stuck = worker("stuck", journal, shutdown=0.2)
    ref = start_sup([worker("A", journal), stuck])
    stuck_ref = which_children(ref)[1].ref
    assert stuck_ref is not None
    stuck_ref.tell(("block", release))
    began = time.monotonic()
    assert ref.stop(block=True, timeout=5)
    assert time.monotonic() - began < 2.0
    killed = recorder.wait("shutdown", child="stuck")[0]
    assert killed.reason == "killed (no stop within 0.2 s)"
    assert journal.of("stop") == ["A"]
    release.set()  # let the stuck actor reach its stop message
    assert dead(stuck_ref)


def test_brutal_kill_does_not_wait(start_sup: StartSup, journal: Journal) -> None:
    release = threading.Event()
    ref = start_sup([worker("stuck", journal, shutdown="brutal_kill")])
    stuck_ref = which_children(ref)[0].ref
    assert stuck_ref is not None
    stuck_ref.tell(("block", release))
    assert ref.stop(block=True, timeout=2)
    release.set()
    assert dead(stuck_ref)


def test_infinity_waits_for_the_child_to_finish(start_sup: StartSup, journal: Journal) -> None:
    gate = threading.Event()
    ref = start_sup([worker("slow", journal, shutdown="infinity", stop_gate=gate)])
    stopping = ref.stop(block=False)
    with pytest.raises(pykka.Timeout):
        stopping.get(timeout=0.2)  # still waiting for the child
    gate.set()
    assert stopping.get(timeout=5)
    assert journal.of("stop") == ["slow"]


def test_asking_a_dead_supervisor_raises_instead_of_hanging(start_sup: StartSup) -> None:
    ref = start_sup([])
    ref.stop(block=True)
    with pytest.raises(SupervisorNotRunning, match="not running"):
        which_children(ref, timeout=1)


def test_asking_something_that_is_not_a_supervisor_is_a_clear_error() -> None:
    ref = Worker.start()
    try:
        with pytest.raises(SupervisorError, match="is not a supervisor"):
            which_children(ref)
        with pytest.raises(SupervisorError, match="expected a supervisor's ActorRef"):
            which_children("mesh")  # type: ignore[arg-type]
    finally:
        ref.stop()


@pytest.mark.timeout(30)
def test_a_thousand_children_start_and_stop_without_extra_threads(journal: Journal) -> None:
    before = threading.active_count()
    ref = Supervisor.start(SupFlags(), [worker(f"w{i}", journal) for i in range(1000)])
    try:
        assert threading.active_count() - before <= 1000 + 2  # the actors, supervisor, timer
        assert len(which_children(ref)) == 1000
    finally:
        assert ref.stop(block=True, timeout=20)
    assert len(journal.of("stop")) == 1000


class Exiter(Worker):
    def on_receive(self, message: Any) -> Any:
        if message == "exit":
            raise SystemExit(3)
        return super().on_receive(message)


@pytest.mark.timeout(20)
def test_a_base_exception_stops_the_whole_tree_promptly_as_pykka_does(
    journal: Journal, recorder: Recorder
) -> None:
    children = [worker("A", journal), ChildSpec("X", lambda: Exiter.start(name="X"))]
    sup = Supervisor.start(SupFlags(intensity=5), children, path="root", reporter=recorder)
    began = time.monotonic()
    which_children(sup)[1].ref.tell("exit")  # type: ignore[union-attr]
    assert wait_exit(sup, timeout=10) is not None
    assert time.monotonic() - began < 3.0  # no wait for a shutdown timeout
    assert recorder.events("child_terminated", "X")[0].reason == "SystemExit: 3"


_FAILS_IN_ON_START = textwrap.dedent("""
    from supervisors import ChildSpec, StartError, SupervisedActor, Supervisor, SupFlags

    class Bad(SupervisedActor):
        def on_start(self):
            raise RuntimeError("the port is taken")

    reports = []
    try:
        Supervisor.start(SupFlags(), [ChildSpec("bad", Bad.start)], reporter=reports.append)
    except StartError as exc:
        print("error:", exc.reason)
    print("report:", [r.reason for r in reports if r.event == "start_error"][0])
""")


def test_a_child_failing_in_on_start_keeps_its_reason_without_log_capture() -> None:
    # In a plain process nothing keeps the dead actor alive (pytest's log capture holds the
    # traceback, and with it the actor): the reason must come from the recorded exit.
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-c", _FAILS_IN_ON_START], env=env, cwd=repo,
                          capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.splitlines() == [
        "error: RuntimeError: the port is taken",
        "report: RuntimeError: the port is taken",
    ]
