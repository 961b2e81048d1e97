"""DynamicSupervisor: children added at run time, max_children, concurrent shutdown."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from sv_helpers import Crash, Journal, Recorder, ref_of, worker

from supervisors import (
    AlreadyStarted,
    Backoff,
    DynamicSupervisor,
    MaxChildren,
    NotFound,
    SpecError,
    StartError,
    count_children,
    get_childspec,
    start_child,
    terminate_child,
    which_children,
)


@pytest.fixture
def dyn(recorder: Recorder) -> Iterator[pykka.ActorRef[Any]]:
    ref = DynamicSupervisor.start(path="node-1/apps", max_children=3, reporter=recorder)
    yield ref
    ref.stop(block=True, timeout=10)


def test_it_starts_empty_and_takes_children_at_run_time(
    dyn: pykka.ActorRef[Any], journal: Journal
) -> None:
    assert which_children(dyn) == []
    ref = start_child(dyn, worker("hello", journal, meta={"app": "hello"}))
    assert ref.ask("ping", timeout=5) == "pong"
    assert [(i.id, i.status, i.meta) for i in which_children(dyn)] == [
        ("hello", "running", {"app": "hello"})
    ]
    assert count_children(dyn) == {"specs": 1, "active": 1, "supervisors": 0, "workers": 1}


def test_ids_are_unique_and_max_children_is_enforced(
    dyn: pykka.ActorRef[Any], journal: Journal
) -> None:
    first = start_child(dyn, worker("a", journal))
    with pytest.raises(AlreadyStarted) as info:
        start_child(dyn, worker("a", journal))
    assert info.value.ref == first
    start_child(dyn, worker("b", journal))
    start_child(dyn, worker("c", journal))
    with pytest.raises(MaxChildren, match="already 3 children"):
        start_child(dyn, worker("d", journal))
    with pytest.raises(SpecError):
        start_child(dyn, "not a spec")  # type: ignore[arg-type]


def test_a_failed_start_is_not_kept(dyn: pykka.ActorRef[Any], journal: Journal) -> None:
    with pytest.raises(StartError, match="'bad' failed to start: no_start"):
        start_child(dyn, worker("bad", journal, fail_start=True))
    assert which_children(dyn) == []


def test_crashed_children_restart_and_terminated_ones_are_forgotten(
    dyn: pykka.ActorRef[Any], journal: Journal, recorder: Recorder
) -> None:
    start_child(dyn, worker("a", journal))
    start_child(dyn, worker("t", journal, restart="transient"))
    ref_of(dyn, "a").tell(Crash())
    recorder.wait("child_restarted", "a")
    ref_of(dyn, "t").tell("stop")
    recorder.wait("child_terminated", "t")
    terminate_child(dyn, "a")
    assert which_children(dyn) == []
    with pytest.raises(NotFound):
        get_childspec(dyn, "a")


def test_its_default_backoff_applies_to_children_without_one(
    recorder: Recorder, journal: Journal
) -> None:
    policy = Backoff(base=0.01, cap=0.01, jitter=0.0)
    dyn = DynamicSupervisor.start(path="apps", backoff=policy, reporter=recorder)
    try:
        start_child(dyn, worker("a", journal))
        assert get_childspec(dyn, "a").backoff == policy
        ref_of(dyn, "a").tell(Crash())
        assert recorder.wait("backoff", "a")[0].delay == pytest.approx(0.01)
        recorder.wait("child_restarted", "a")
    finally:
        dyn.stop(block=True, timeout=5)


@pytest.mark.timeout(20)
def test_children_are_shut_down_concurrently(recorder: Recorder, journal: Journal) -> None:
    # Each child's on_stop waits at a barrier for all three: it only opens if the
    # supervisor asked them all to stop before waiting for any one of them.
    barrier = threading.Barrier(3)
    dyn = DynamicSupervisor.start(path="apps", reporter=recorder)
    for name in "abc":
        start_child(dyn, worker(name, journal, stop_gate=barrier))
    assert dyn.stop(block=True, timeout=10)
    assert sorted(journal.of("stop")) == ["a", "b", "c"]
    assert not barrier.broken
    assert recorder.events("shutdown", child=None)[-1].reason == "shutdown"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SpecError, match="max_children"):
        DynamicSupervisor.start(max_children=-1)
    with pytest.raises(SpecError, match="backoff"):
        DynamicSupervisor.start(backoff=1.0)
