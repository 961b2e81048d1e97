"""Restart intensity, live: giving up, escalation through three levels, auto_shutdown."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pykka
import pytest
from sv_helpers import Crash, Journal, Recorder, ref_of, wait_until, worker

from supervisors import (
    Backoff,
    ChildSpec,
    DynamicSupervisor,
    SupervisedActor,
    Supervisor,
    SupervisorNotRunning,
    SupFlags,
    start_child,
    wait_exit,
    which_children,
)

StartSup = Callable[..., pykka.ActorRef[Any]]


def test_exceeding_intensity_stops_children_in_reverse_and_exits(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    sup = start_sup([worker(n, journal) for n in "ABC"], SupFlags(intensity=2, period=60))
    for round_ in (1, 2):
        ref_of(sup, "B").tell(Crash())
        recorder.wait("child_restarted", "B", count=round_)
    journal.clear()
    ref_of(sup, "B").tell(Crash())
    exit_ = wait_exit(sup, timeout=5)
    assert exit_ is not None and (exit_.reason, exit_.normal) == ("shutdown", True)  # OTP's
    assert exit_.details == {"cause": "reached_max_restart_intensity"}
    assert journal.of("stop") == ["C", "A"]
    report = recorder.wait("reached_max_restart_intensity")[0]
    assert (report.child, report.reason) == ("B", "Crash: boom")
    assert report.extra == {"intensity": 2, "period": 60}
    assert recorder.events("shutdown")[-1].reason == "reached_max_restart_intensity"
    with pytest.raises(SupervisorNotRunning):
        which_children(sup)


def nested(
    path: str, intensity: int, children: list[ChildSpec], recorder: Recorder
) -> ChildSpec:
    flags = SupFlags(intensity=intensity, period=60)
    return ChildSpec(
        path.rsplit("/", 1)[-1],
        lambda: Supervisor.start(flags, children, path=path, reporter=recorder),
        type="supervisor",
    )


def test_escalation_through_three_levels(journal: Journal, recorder: Recorder) -> None:
    leaf = nested("root/mid/leaf", 0, [worker("W", journal)], recorder)
    mid = nested("root/mid", 0, [leaf, worker("M", journal)], recorder)
    root = Supervisor.start(
        SupFlags(intensity=0), [mid, worker("R", journal)], path="root", reporter=recorder
    )
    w = ref_of(ref_of(ref_of(root, "mid"), "leaf"), "W")
    w.tell(Crash())
    exit_ = wait_exit(root, timeout=5)
    assert exit_ is not None and exit_.details == {"cause": "reached_max_restart_intensity"}
    gave_up = recorder.events("reached_max_restart_intensity")
    assert [(r.supervisor, r.child) for r in gave_up] == [
        ("root/mid/leaf", "W"),
        ("root/mid", "leaf"),
        ("root", "mid"),
    ]
    terminated = recorder.events("child_terminated")
    assert [(r.supervisor, r.child, r.reason, r.extra.get("cause")) for r in terminated][1:] == [
        ("root/mid", "leaf", "shutdown", "reached_max_restart_intensity"),
        ("root", "mid", "shutdown", "reached_max_restart_intensity"),
    ]
    assert sorted(journal.of("stop")) == ["M", "R"]


def test_a_transient_parent_does_not_restart_a_child_supervisor_that_gave_up(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    leaf = nested("root/leaf", 0, [worker("W", journal)], recorder)
    root = start_sup([dataclasses.replace(leaf, restart="transient")], SupFlags(intensity=1))
    ref_of(ref_of(root, "leaf"), "W").tell(Crash())
    recorder.wait("child_terminated", "leaf")
    wait_until(lambda: [(i.id, i.status) for i in which_children(root)] == [("leaf", "undefined")])
    assert recorder.events("child_restarted", "leaf") == []
    assert root.is_alive()


def test_a_parent_restarts_a_child_supervisor_that_gave_up(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    leaf = nested("root/leaf", 0, [worker("W", journal)], recorder)
    root = start_sup([leaf], SupFlags(intensity=1))
    old_leaf = ref_of(root, "leaf")
    ref_of(old_leaf, "W").tell(Crash())
    recorder.wait("child_restarted", "leaf")
    new_leaf = ref_of(root, "leaf")
    assert new_leaf != old_leaf
    assert ref_of(new_leaf, "W").ask("ping", timeout=5) == "pong"
    assert journal.of("start") == ["W", "W"]


@pytest.mark.parametrize(
    ("mode", "exits", "shuts_down"),
    [
        ("never", [], False),
        ("any_significant", ["S1"], True),
        ("all_significant", ["S1"], False),
        ("all_significant", ["S1", "S2"], True),
    ],
)
def test_auto_shutdown_with_significant_children(
    mode: str,
    exits: list[str],
    shuts_down: bool,
    start_sup: StartSup,
    journal: Journal,
    recorder: Recorder,
) -> None:
    significant = mode != "never"
    children = [worker("P", journal)] + [
        worker(n, journal, restart="transient", significant=significant) for n in ("S1", "S2")
    ]
    sup = start_sup(children, SupFlags(auto_shutdown=mode))  # type: ignore[arg-type]
    for name in exits:
        ref_of(sup, name).tell("stop")  # a normal exit: not restarted
        recorder.wait("child_terminated", name)
    if shuts_down:
        exit_ = wait_exit(sup, timeout=5)
        assert exit_ is not None and exit_.reason == "shutdown" and exit_.normal
        assert recorder.events("shutdown")[-1].reason == "auto_shutdown"
        assert "P" in journal.of("stop")
    else:
        wait_until(lambda: [i.status for i in which_children(sup)].count("undefined") == len(exits))
        assert sup.is_alive()


class CrashesAtOnce(SupervisedActor):
    """Starts fine, then crashes on its first message (which it sends itself)."""

    def on_start(self) -> None:
        self.actor_ref.tell("crash")

    def on_receive(self, message: Any) -> Any:
        raise Crash()


def test_a_dynamic_parent_with_backoff_retries_a_crash_looping_child_supervisor_ever_slower(
    recorder: Recorder,
) -> None:
    # The mesh's shape: `apps` (a DynamicSupervisor with backoff) over app supervisors that
    # reach their intensity. They exit shutdown, and a permanent child is restarted after any
    # exit: retried ever more slowly, and `apps` itself never gives up.
    apps = DynamicSupervisor.start(path="apps", reporter=recorder, intensity=1000, period=1.0,
                                   backoff=Backoff(base=0.01, cap=10.0, jitter=0.0))
    try:
        app = ChildSpec("app", lambda: Supervisor.start(
            SupFlags(intensity=0), [ChildSpec("w", CrashesAtOnce.start)], path="apps/app",
            reporter=recorder), type="supervisor")
        start_child(apps, app)
        delays = [r.delay for r in recorder.wait("backoff", "app", count=3, timeout=10)][:3]
        assert delays == [0.01, 0.02, 0.04]
        gave_up = recorder.events("reached_max_restart_intensity")
        assert gave_up and {r.supervisor for r in gave_up} == {"apps/app"}
        assert apps.is_alive()
    finally:
        apps.stop(block=True, timeout=10)
