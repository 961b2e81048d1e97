"""Pooled actors (supervisors.pool): few threads, the same one-message-at-a-time semantics."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest
from sv_helpers import Crash, Journal, Recorder, Worker, dead, ref_of, wait_until, worker

from supervisors import ChildSpec, Latch, SupervisedActor, SupFlags, wait_exit
from supervisors.pool import PooledInbox, WorkerPool

pytestmark = pytest.mark.timeout(30)


class Pooled(SupervisedActor):
    pooled = True

    def __init__(self, peer: pykka.ActorRef[Any] | None = None) -> None:
        super().__init__()
        self.peer = peer
        self.seen: list[int] = []
        self.threads: set[str] = set()

    def on_receive(self, message: Any) -> Any:
        self.threads.add(threading.current_thread().name)
        match message:
            case int(n):
                self.seen.append(n)
            case "seen":
                return list(self.seen)
            case "ask-peer":
                assert self.peer is not None
                return self.peer.ask("seen", timeout=5)
            case "threads":
                return sorted(self.threads)
            case Crash():
                raise message
        return None


class FailsToStart(SupervisedActor):
    pooled = True

    def on_start(self) -> None:
        raise Crash("cannot start", reason="no_start")


def test_a_pooled_actor_gets_its_messages_one_by_one_in_order() -> None:
    ref = Pooled.start()
    try:
        for n in range(2000):
            ref.tell(n)
        assert ref.ask("seen", timeout=5) == list(range(2000))
        assert all(name.startswith("actor-pool-") for name in ref.ask("threads", timeout=5))
    finally:
        ref.stop(block=True, timeout=5)


def test_idle_pooled_actors_hold_no_thread_of_their_own() -> None:
    before = threading.active_count()
    refs = [Pooled.start() for _ in range(200)]
    try:
        for ref in refs:
            ref.tell(1)
        assert all(ref.ask("seen", timeout=5) == [1] for ref in refs)
        # 200 threaded actors would add 200 threads; the pool adds what was busy at once
        assert threading.active_count() - before < 60
    finally:
        for ref in refs:
            ref.stop(block=True, timeout=5)


def test_handlers_that_block_on_each_other_do_not_starve_the_pool() -> None:
    """Every actor's handler waits on another pooled actor: a fixed-size pool would deadlock."""
    targets = [Pooled.start() for _ in range(40)]
    askers = [Pooled.start(peer=t) for t in targets]
    try:
        futures = [a.ask("ask-peer", block=False) for a in askers]
        assert [f.get(timeout=10) for f in futures] == [[] for _ in askers]
    finally:
        for ref in [*askers, *targets]:
            ref.stop(block=True, timeout=5)


def test_a_crash_is_reported_once_after_cleanup_and_asks_after_death_fail() -> None:
    ref = Pooled.start()
    actor = ref._actor_weakref()
    assert isinstance(actor, Pooled)
    exits: list[Any] = []
    actor.watch(exits.append)
    ref.tell(Crash("boom", reason="broken"))
    exit_ = wait_exit(ref, timeout=5)
    assert exit_ is not None and exit_.reason == "broken" and not exit_.normal
    assert [e.reason for e in exits] == ["broken"]
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("seen", timeout=5)


def test_a_failed_start_is_an_in_start_exit() -> None:
    ref = FailsToStart.start()
    exit_ = wait_exit(ref, timeout=5)
    assert exit_ is not None and exit_.reason == "no_start" and exit_.in_start
    assert dead(ref)


def test_a_supervisor_restarts_a_pooled_child(
    start_sup: Any, journal: Journal, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Worker, "pooled", True)
    sup = start_sup([worker("A", journal), worker("B", journal)], SupFlags("one_for_one"))
    before = ref_of(sup, "B")
    before.tell(Crash())
    recorder.wait("child_restarted", child="B")
    after = ref_of(sup, "B")
    assert after != before and after.ask("ping", timeout=5) == "pong"
    assert journal.of("failure") == ["B"]


def test_a_pooled_start_failure_under_a_supervisor_is_a_start_error(start_sup: Any) -> None:
    from supervisors import StartError

    with pytest.raises(StartError):
        start_sup([ChildSpec("F", FailsToStart.start)])


def test_the_pool_lets_idle_workers_go_and_keeps_a_few() -> None:
    pool = WorkerPool(idle_seconds=0.05, keep_idle=1)
    release = threading.Event()
    done = threading.Semaphore(0)

    def turn() -> None:
        release.wait(5)
        done.release()

    for _ in range(8):
        pool.submit(turn)
    wait_until(lambda: pool.workers == 8)  # none idle: every turn got a worker of its own
    release.set()
    for _ in range(8):
        assert done.acquire(timeout=5)
    wait_until(lambda: pool.workers == 1)


def test_the_inbox_schedules_one_turn_at_a_time() -> None:
    pool = WorkerPool(idle_seconds=0.05, keep_idle=0)
    inbox = PooledInbox(pool)
    running = 0
    most = 0
    handled: list[int] = []
    lock = threading.Lock()

    def turn() -> None:
        nonlocal running, most
        while (item := inbox.next_or_release()) is not None:
            with lock:
                running += 1
                most = max(most, running)
            handled.append(item)
            with lock:
                running -= 1

    inbox.start(turn)
    threads = [threading.Thread(target=lambda k=k: [inbox.put(k * 1000 + i) for i in range(300)])
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    wait_until(lambda: len(handled) == 1200)
    assert most == 1
    for k in range(4):  # each sender's messages in the order it sent them
        mine = [x for x in handled if x // 1000 == k]
        assert mine == sorted(mine)


def test_a_steady_trickle_of_turns_keeps_few_workers_busy_and_lets_the_rest_go() -> None:
    """Idle workers are woken last-in first-out: the bottom of the stack times out and exits."""
    pool = WorkerPool(idle_seconds=0.1, keep_idle=1)
    release = threading.Event()
    for _ in range(8):
        pool.submit(lambda: release.wait(5))
    wait_until(lambda: pool.workers == 8)
    release.set()
    deadline = time.monotonic() + 10
    while pool.workers > 2:  # a turn every 5 ms: far more often than the idle timeout
        assert time.monotonic() < deadline, f"{pool.workers} workers still alive"
        pool.submit(lambda: None)
        time.sleep(0.005)


def test_a_latch_is_a_one_shot_event_that_wakes_every_waiter() -> None:
    latch = Latch()
    assert not latch.is_set() and latch.wait(0.01) is False
    woken = threading.Semaphore(0)
    waiters = [threading.Thread(target=lambda: latch.wait(5) and woken.release())
               for _ in range(5)]
    for t in waiters:
        t.start()
    setters = [threading.Thread(target=latch.set) for _ in range(3)]  # racing setters: no error
    for t in setters:
        t.start()
    for t in [*setters, *waiters]:
        t.join(5)
    assert all(woken.acquire(timeout=5) for _ in range(5))
    assert latch.is_set() and latch.wait() and latch.wait(0)


def test_a_bounded_pool_queues_turns_beyond_its_workers() -> None:
    pool = WorkerPool(idle_seconds=0.05, keep_idle=0, max_workers=2, name="bounded")
    release = threading.Event()
    done = threading.Semaphore(0)

    def turn() -> None:
        release.wait(5)
        done.release()

    for _ in range(6):
        pool.submit(turn)
    assert pool.workers == 2
    release.set()
    assert all(done.acquire(timeout=5) for _ in range(6))
    wait_until(lambda: pool.workers == 0)
