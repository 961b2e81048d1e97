"""Pooled actors: many actors on few threads, like the BEAM's schedulers.

A plain Pykka ``ThreadingActor`` owns a thread for its whole life, idle or not: a mesh with 300
workloads held ~600 idle threads (~24 KB of RSS each). A pooled actor owns none. Its inbox
schedules a *turn* on a shared pool whenever a message arrives for an actor that has no turn
running; the turn handles messages until the inbox is empty, then gives the thread back. At most
one turn of an actor runs at a time, so the actor still sees its messages one by one, in order.

The pool is a *cached* pool: a turn never waits for a busy worker, a new one starts instead.
A handler may therefore block (a supervisor waiting for a child's cleanup, an ``ask`` to another
pooled actor) without starving or deadlocking anyone, exactly as with a thread per actor; the
number of threads is the number of actors busy at the same moment, not the number of actors.
Workers idle for :data:`IDLE_SECONDS` exit, down to :data:`KEEP_IDLE`.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from supervisors.callbacks import call_logged
from supervisors.singleton import Singleton

__all__ = ["IDLE_SECONDS", "KEEP_IDLE", "PooledInbox", "WorkerPool", "shared_pool"]

log = logging.getLogger(__name__)

IDLE_SECONDS = 5.0
"""How long a worker waits for a turn before it exits (if more than KEEP_IDLE are idle)."""

KEEP_IDLE = 4
"""Workers kept even when idle, so that a quiet system still answers without a thread start."""

Turn = Callable[[], None]


class _Worker:
    """An idle worker's parking spot: a turn is handed to it, then it is woken."""

    __slots__ = ("turn", "wake")

    def __init__(self) -> None:
        self.turn: Turn | None = None
        self.wake = threading.Lock()
        self.wake.acquire()  # released by the pool to wake the worker


class WorkerPool:
    """A cached pool of daemon worker threads: a turn goes to an idle worker or a new one.

    Idle workers are woken last-in first-out, so that a steady trickle of turns keeps the same
    few workers busy and the others reach their idle timeout and exit (first-in first-out wakes
    would spread the turns over every worker and keep them all alive).

    ``max_workers`` bounds the pool for plain tasks that wait only on the OS (then a turn
    beyond the bound queues); actors' turns need the unbounded default, or handlers that wait
    on each other could deadlock.
    """

    def __init__(self, idle_seconds: float = IDLE_SECONDS, keep_idle: int = KEEP_IDLE,
                 max_workers: int | None = None, name: str = "actor-pool") -> None:
        self._idle_seconds = idle_seconds
        self._keep_idle = keep_idle
        self._max_workers = max_workers
        self._name = name
        self._what = f"{name}: a turn"
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # a stack: the most recently idle worker on top
        self._queued: deque[Turn] = deque()  # only when max_workers are all busy
        self._workers = 0
        self._names = itertools.count()

    @property
    def workers(self) -> int:
        """How many worker threads exist right now."""
        return self._workers

    def submit(self, turn: Turn) -> None:
        """Run ``turn()`` on a worker: the most recently idle one if there is one, else a new
        one (a turn never waits for a busy worker)."""
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
                worker.turn = turn
                worker.wake.release()
                return
            if self._max_workers is not None and self._workers >= self._max_workers:
                self._queued.append(turn)
                return
            self._workers += 1
        worker = _Worker()
        worker.turn = turn
        thread = threading.Thread(target=self._work, args=(worker,),
                                  name=f"{self._name}-{next(self._names)}", daemon=True)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._workers -= 1
            raise

    def _work(self, worker: _Worker) -> None:
        while True:
            turn, worker.turn = worker.turn, None
            assert turn is not None
            call_logged(log, self._what, turn)  # a turn handles its own failures: a bug
            del turn
            with self._lock:
                if self._queued:
                    worker.turn = self._queued.popleft()
                    continue
                self._idle.append(worker)
            while not worker.wake.acquire(timeout=self._idle_seconds):
                with self._lock:
                    if worker not in self._idle:  # handed a turn as the wait timed out
                        continue  # its wake is released already: the next acquire succeeds
                    if len(self._idle) > self._keep_idle:
                        self._idle.remove(worker)
                        self._workers -= 1
                        return


class PooledInbox:
    """A Pykka ``ActorInbox`` that schedules its actor's turn when a message arrives.

    Pykka calls ``put`` (``tell``/``ask``), and ``empty``/``get`` while tearing down; the
    actor's turn takes messages with :meth:`next_or_release`.
    """

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        # None while empty between turns: an idle actor holds no deque (~600 bytes each)
        self._items: deque[Any] | None = None
        self._turn: Turn | None = None
        self._scheduled = False

    def start(self, turn: Turn) -> None:
        """Begin scheduling: the first turn runs now (it runs the actor's setup)."""
        with self._lock:
            self._turn = turn
            self._scheduled = True
        self._pool.submit(turn)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self._lock:
            if self._items is None:
                self._items = deque()
            self._items.append(item)
            if self._scheduled or self._turn is None:
                return
            self._scheduled = True
            turn = self._turn
        self._pool.submit(turn)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        with self._lock:
            if not self._items:
                raise queue.Empty
            return self._items.popleft()

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        items = self._items
        return len(items) if items is not None else 0

    def release_if_empty(self) -> bool:
        """End the turn unless messages are queued (then the caller handles them first)."""
        with self._lock:
            if self._items:
                return False
            self._items, self._scheduled = None, False
            return True

    def next_or_release(self) -> Any | None:
        """The next message; or ``None``, and the turn ends (a later ``put`` starts another)."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            self._items, self._scheduled = None, False
            return None


shared_pool: Singleton[WorkerPool] = Singleton(WorkerPool)
"""The process-wide pool that pooled actors' turns run on (``shared_pool()``)."""
