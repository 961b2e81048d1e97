"""Test actors and waiting helpers for the supervisors tests (no sleeps to synchronise)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

from supervisors import ChildSpec, Report, SupervisedActor, which_children


class Crash(Exception):  # a message that makes a worker crash
    """Told to a Worker, it is raised in the handler: an exception in a tell."""

    def __init__(self, text: str = "boom", reason: str | None = None, details: Any = None):
        super().__init__(text)
        if reason is not None:
            self.reason = reason
        if details is not None:
            self.details = details


class Journal:
    """A thread-safe record of what the workers did, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[tuple[str, str]] = []

    def add(self, what: str, who: str) -> None:
        with self._lock:
            self.entries.append((what, who))

    def of(self, what: str) -> list[str]:
        with self._lock:
            return [who for w, who in self.entries if w == what]

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()


class Worker(SupervisedActor):
    """A worker that answers ``ping``, crashes on a told :class:`Crash`, stops on ``stop``."""

    def __init__(
        self,
        name: str = "w",
        journal: Journal | None = None,
        fail_start: bool = False,
        stop_gate: threading.Barrier | threading.Event | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.journal = journal or Journal()
        self.fail_start = fail_start
        self.stop_gate = stop_gate

    def on_start(self) -> None:
        if self.fail_start:
            raise Crash("cannot start", reason="no_start")
        self.journal.add("start", self.name)

    def on_stop(self) -> None:
        if isinstance(self.stop_gate, threading.Barrier):
            self.stop_gate.wait(timeout=5)
        elif isinstance(self.stop_gate, threading.Event):
            self.stop_gate.wait()
        self.journal.add("stop", self.name)

    def on_failure(self, *_exc: object) -> None:
        self.journal.add("failure", self.name)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise message
        if message == "stop":
            self.stop()
            return None
        if isinstance(message, tuple) and message[0] == "block":
            message[1].wait()
            return None
        return "pong"


def worker(name: str, journal: Journal | None = None, **kwargs: Any) -> ChildSpec:
    """A ChildSpec for a :class:`Worker` called ``name``."""
    spec_keys = {"restart", "shutdown", "significant", "backoff", "meta", "type"}
    spec_kwargs = {k: v for k, v in kwargs.items() if k in spec_keys}
    actor_kwargs = {k: v for k, v in kwargs.items() if k not in spec_keys}
    return ChildSpec(
        name, lambda: Worker.start(name=name, journal=journal, **actor_kwargs), **spec_kwargs
    )


class PortWorker(SupervisedActor):
    """Binds a fixed TCP port in on_start and releases it, slowly, in on_failure/on_stop.

    ``events`` gets ``"bind"`` and ``"release"`` in the order they happened.
    """

    def __init__(self, port: int, events: list[str]) -> None:
        super().__init__()
        self.port = port
        self.events = events
        self.sock: socket.socket | None = None

    def on_start(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen()
        self.events.append("bind")

    def _release(self) -> None:
        time.sleep(0.05)  # a slow cleanup: widens the race a premature restart would lose
        assert self.sock is not None
        self.sock.close()
        self.events.append("release")

    def on_failure(self, *_exc: object) -> None:
        self._release()

    def on_stop(self) -> None:
        self._release()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise message
        return self.port


class Recorder:
    """A reporter that keeps every report and lets a test wait for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.reports: list[Report] = []

    def __call__(self, report: Report) -> None:
        with self._cond:
            self.reports.append(report)
            self._cond.notify_all()

    def events(self, event: str | None = None, child: str | None = None) -> list[Report]:
        with self._cond:
            return [
                r
                for r in self.reports
                if (event is None or r.event == event) and (child is None or r.child == child)
            ]

    def wait(
        self, event: str, child: str | None = None, count: int = 1, timeout: float = 5.0
    ) -> list[Report]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    r
                    for r in self.reports
                    if r.event == event and (child is None or r.child == child)
                ]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {count}x {event} {child or ''} within {timeout}s; got "
                        f"{[(r.event, r.child) for r in self.reports]}"
                    )
                self._cond.wait(left)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.002)


def dead(ref: pykka.ActorRef[Any], timeout: float = 5.0) -> bool:
    """Wait for an actor to be stopped; True once it is."""
    return ref.actor_stopped.wait(timeout)


def ref_of(sup: pykka.ActorRef[Any], child_id: str) -> pykka.ActorRef[Any]:
    """The running ref of a supervisor's child (fails if it is not running)."""
    for info in which_children(sup):
        if info.id == child_id:
            assert info.ref is not None, f"{child_id} is {info.status}"
            return info.ref
    raise AssertionError(f"no child {child_id}")
