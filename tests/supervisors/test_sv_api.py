"""The API's OTP outcomes, describe_tree, and a tree of 300+ actors."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pykka
import pytest
from sv_helpers import Journal, Recorder, ref_of, wait_until, worker

from supervisors import (
    AlreadyPresent,
    AlreadyStarted,
    Backoff,
    ChildSpec,
    NotFound,
    Running,
    Supervisor,
    SupervisorNotRunning,
    SupFlags,
    count_children,
    delete_child,
    describe_tree,
    get_childspec,
    restart_child,
    start_child,
    terminate_child,
    which_children,
)

StartSup = Callable[..., pykka.ActorRef[Any]]


def test_child_operations_have_otp_outcomes(start_sup: StartSup, journal: Journal) -> None:
    sup = start_sup([worker("A", journal)])
    spec = get_childspec(sup, "A")
    assert spec.id == "A"
    with pytest.raises(AlreadyStarted):
        start_child(sup, spec)
    with pytest.raises(Running):
        restart_child(sup, "A")
    with pytest.raises(Running):
        delete_child(sup, "A")
    terminate_child(sup, "A")
    assert [(i.status, i.ref) for i in which_children(sup)] == [("undefined", None)]
    with pytest.raises(AlreadyPresent):
        start_child(sup, spec)
    new = restart_child(sup, "A")
    assert new.ask("ping", timeout=5) == "pong"
    terminate_child(sup, "A")
    delete_child(sup, "A")
    for call in (terminate_child, restart_child, delete_child, get_childspec):
        with pytest.raises(NotFound, match="no child 'A'"):
            call(sup, "A")
    start_child(sup, worker("B", journal, restart="temporary"))
    terminate_child(sup, "B")  # a temporary child's spec is not kept
    assert which_children(sup) == []
    assert journal.of("start") == ["A", "A", "B"]


def test_count_children(start_sup: StartSup, journal: Journal, recorder: Recorder) -> None:
    inner = ChildSpec(
        "inner",
        lambda: Supervisor.start(SupFlags(), [worker("x", journal)], path="root/inner"),
        type="supervisor",
    )
    sup = start_sup([worker("A", journal), inner])
    terminate_child(sup, "A")
    assert count_children(sup) == {"specs": 2, "active": 1, "supervisors": 1, "workers": 1}


def test_describe_tree_is_recursive(start_sup: StartSup, journal: Journal) -> None:
    inner = ChildSpec(
        "apps",
        lambda: Supervisor.start(
            SupFlags("rest_for_one", 4, 30.0), [worker("hello", journal)], path="mesh/apps"
        ),
        type="supervisor",
        meta={"role": "apps"},
    )
    sup = start_sup([worker("fabric", journal), inner], SupFlags(intensity=3), path="mesh")
    tree = describe_tree(sup)
    assert {k: tree[k] for k in ("id", "type", "path", "strategy", "intensity", "period")} == {
        "id": "mesh",
        "type": "supervisor",
        "path": "mesh",
        "strategy": "one_for_one",
        "intensity": 3,
        "period": 5.0,
    }
    fabric, apps = tree["children"]
    assert (fabric["id"], fabric["type"], fabric["status"], fabric["restarts"]) == (
        "fabric", "worker", "running", 0,
    )  # fmt: skip
    assert fabric["ref"] == ref_of(sup, "fabric")
    assert (apps["id"], apps["path"], apps["strategy"], apps["meta"]) == (
        "apps", "mesh/apps", "rest_for_one", {"role": "apps"},
    )  # fmt: skip
    assert [c["id"] for c in apps["children"]] == ["hello"]


@pytest.mark.timeout(30)
def test_a_tree_of_300_actors_without_extra_threads(journal: Journal) -> None:
    before = threading.active_count()
    registered = len(pykka.ActorRegistry.get_all())

    def branch(i: int) -> ChildSpec:
        kids = [worker(f"w{i}-{j}", journal) for j in range(15)]
        return ChildSpec(
            f"s{i}",
            lambda: Supervisor.start(SupFlags(), kids, path=f"root/s{i}"),
            type="supervisor",
        )

    root = Supervisor.start(SupFlags(), [branch(i) for i in range(20)], path="root")
    try:
        actors = 1 + 20 + 20 * 15
        assert len(pykka.ActorRegistry.get_all()) - registered == actors
        assert threading.active_count() - before <= actors + 1  # + the shared timer thread
        tree = describe_tree(root)
        assert sum(len(s["children"]) for s in tree["children"]) == 300
    finally:
        assert root.stop(block=True, timeout=20)
    assert len(journal.of("stop")) == 300


@pytest.mark.timeout(20)
def test_terminate_child_waits_as_long_as_the_childs_shutdown_may_take(
    start_sup: StartSup, journal: Journal
) -> None:
    gate = threading.Event()
    sup = start_sup([worker("slow", journal, shutdown=30.0, stop_gate=gate)])
    waiter = threading.Thread(target=terminate_child, args=(sup, "slow"))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # still waiting for the child's on_stop, no error
    gate.set()
    waiter.join(5)
    assert not waiter.is_alive()
    assert journal.of("stop") == ["slow"]


def test_a_busy_supervisor_gives_a_clear_error_instead_of_hanging(
    start_sup: StartSup, journal: Journal
) -> None:
    gate = threading.Event()
    sup = start_sup([worker("slow", journal, shutdown="infinity", stop_gate=gate)])
    slow = ref_of(sup, "slow")
    stopping = threading.Thread(target=terminate_child, args=(sup, "slow"))
    stopping.start()
    try:
        wait_until(slow.actor_stopped.is_set)  # the supervisor now waits for its on_stop
        with pytest.raises(SupervisorNotRunning, match=r"did not answer within 0\.1 s"):
            which_children(sup, timeout=0.1)
    finally:
        gate.set()
        stopping.join(5)
    assert which_children(sup)[0].status == "undefined"


def test_describe_tree_shows_a_child_supervisor_waiting_to_restart(
    start_sup: StartSup, journal: Journal, recorder: Recorder
) -> None:
    inner = ChildSpec(
        "apps",
        lambda: Supervisor.start(SupFlags(), [worker("hello", journal)], path="mesh/apps"),
        type="supervisor",
        backoff=Backoff(base=30.0, cap=30.0, jitter=0.0),
    )
    sup = start_sup([inner], path="mesh")
    ref_of(sup, "apps").stop()  # an unexpected stop of a permanent child: restarted, after 30 s
    recorder.wait("backoff", "apps")
    (apps,) = describe_tree(sup)["children"]
    assert (apps["id"], apps["status"], apps["restarts"], apps["children"]) == (
        "apps", "restarting", 0, [],
    )  # fmt: skip
