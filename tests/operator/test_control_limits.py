"""The control socket's limits, on a real ControlActor with a real unix socket in this process.

Idle connections cost no thread and are capped (the oldest idle one gives way to a newer
connection, so the CLI is never locked out); when every connection is being served, a new one
is refused; a connection that sends nothing is closed after the idle timeout; and a message
that does not fit its type, or that only the mesh's own actors may send, never reaches an
actor.
"""

from __future__ import annotations

import selectors
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pykka
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.fabric.names import Names
from mycelium.home import Home
from mycelium.messages import GetInfo, Tick, to_wire
from mycelium.operator.client import ControlClient, ControlError
from mycelium.operator.control import ControlActor
from mycelium.operator.control_server import MAX_REQUEST, ControlServer, admission


class Recorder(pykka.ThreadingActor):
    """An actor that keeps every message it receives (to prove what never reached one)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, GetInfo):
            return list(self.seen)
        self.seen.append(message)
        return "got it"


class Control:
    """A running ControlActor on a short socket path, with its names and a client."""

    def __init__(self, ops: dict[str, Callable[[dict[str, Any]], Any]],
                 **limits: Any) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ctl", dir="/tmp"))  # unix paths are short
        self.home = Home(self.root)
        self.names = Names()
        self.recorder = Recorder.start()
        self.names.register("probe", self.recorder)
        self.ref = ControlActor.start(self.names, self.home.control_socket, ops, **limits)
        self.ref.ask(GetInfo(), timeout=10.0)  # answered after on_start bound the socket
        self.client = ControlClient(self.home)

    def info(self) -> dict[str, Any]:
        """The actor's own view (asked directly: a socket request would be a connection)."""
        info: dict[str, Any] = self.ref.ask(GetInfo(), timeout=5.0)
        return info

    def connect(self) -> socket.socket:
        """A raw connection that sends nothing yet."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.home.control_socket))  # blocking: waits for room in the backlog
        sock.settimeout(10.0)
        return sock

    def close(self) -> None:
        self.ref.stop(timeout=10.0)
        self.recorder.stop(timeout=10.0)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def control_factory() -> Iterator[Callable[..., Control]]:
    started: list[Control] = []

    def make(ops: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
             **limits: Any) -> Control:
        ctl = Control(ops or {}, **limits)
        started.append(ctl)
        return ctl

    yield make
    for ctl in started:
        ctl.close()


def _reply(sock: socket.socket) -> dict[str, Any]:
    """The one line the server sent, after which it closed the connection."""
    with sock.makefile("rb") as rfile:
        line = rfile.readline()
        assert rfile.read() == b""  # closed after it
    reply: dict[str, Any] = orjson.loads(line)
    return reply


def _wait(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_three_hundred_idle_connections_cost_no_threads_and_a_request_is_served(
        control_factory: Callable[..., Control]) -> None:
    before = threading.active_count()
    ctl = control_factory(max_connections=20, idle_timeout=60.0)
    socks = [ctl.connect() for _ in range(300)]
    try:
        # 280 of them gave their place to newer ones: each got a refusal line and was closed
        refused: list[dict[str, Any]] = []
        sel = selectors.DefaultSelector()
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + 30.0
        while len(refused) < 280 and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                sel.unregister(key.fileobj)
                refused.append(_reply(key.fileobj))  # type: ignore[arg-type]
        sel.close()
        assert len(refused) == 280
        assert all(r["ok"] is False and "too many control connections" in r["error"]
                   for r in refused)
        info = ctl.info()
        assert info["connections"] == 20
        assert info["threads"] == 1  # the selector: no request, no worker
        assert threading.active_count() - before <= 3  # the actor, the selector, the recorder

        assert "probe" in ctl.client.request("names")  # a normal request is still served
        assert ctl.info()["threads"] <= 2
        assert threading.active_count() - before <= 4
    finally:
        for sock in socks:
            sock.close()
    _wait(lambda: ctl.info()["connections"] == 0, "the server to see the closed connections")


def test_when_every_connection_is_being_served_a_new_one_is_refused(
        control_factory: Callable[..., Control]) -> None:
    release = threading.Event()
    serving = threading.Semaphore(0)

    def block(_req: dict[str, Any]) -> str:
        serving.release()
        assert release.wait(30.0)
        return "done"

    ctl = control_factory({"block": block}, max_connections=2, idle_timeout=60.0)
    results: list[Any] = []
    callers = [threading.Thread(target=lambda: results.append(ctl.client.request("block")))
               for _ in range(2)]
    for caller in callers:
        caller.start()
    try:
        for _ in range(2):
            assert serving.acquire(timeout=20.0)
        with pytest.raises(ControlError, match="serves 2 connections at most"):
            ctl.client.request("names")
        assert ctl.info()["threads"] == 3  # the selector and two workers, never more
    finally:
        release.set()
        for caller in callers:
            caller.join(30.0)
    assert results == ["done", "done"]
    assert "probe" in ctl.client.request("names")
    assert ctl.info()["threads"] <= 3  # the workers are reused


@pytest.mark.parametrize("sent", [b"", b'{"op": "na'])
def test_a_connection_that_sends_no_request_line_is_closed_after_the_idle_timeout(
        control_factory: Callable[..., Control], sent: bytes) -> None:
    ctl = control_factory(idle_timeout=0.2)
    with ctl.connect() as sock:
        sock.sendall(sent)
        reply = _reply(sock)  # blocks until the server gives up on it (10 s socket timeout)
    assert reply == {"ok": False, "error": "no request within 0.2s: closed", "exit_code": 1}
    assert ctl.info()["connections"] == 0
    assert "probe" in ctl.client.request("names")


@given(waiting=st.integers(0, 50), busy=st.integers(0, 50), limit=st.integers(1, 60))
def test_admission_keeps_the_open_connections_within_the_limit(
        waiting: int, busy: int, limit: int) -> None:
    decision = admission(waiting, busy, limit)
    if waiting + busy < limit:
        assert decision == "admit"
    else:  # at (or, after a lower limit, above) the cap: the newcomer never adds one
        assert decision == ("evict-oldest" if waiting else "refuse")


def test_a_request_line_longer_than_the_limit_is_refused(
        control_factory: Callable[..., Control]) -> None:
    ctl = control_factory()
    with ctl.connect() as sock:
        sock.sendall(b"x" * (MAX_REQUEST + 1))
        reply = _reply(sock)
    assert "bytes at most" in reply["error"]
    assert "probe" in ctl.client.request("names")


def test_the_limits_must_be_positive(tmp_path: Path) -> None:
    for limits in ({"max_connections": 0}, {"idle_timeout": 0.0}):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, \
                pytest.raises(ValueError, match="max_connections >= 1"):
            ControlServer(sock, lambda line: line, **limits)
        with pytest.raises(ValueError, match="max_connections >= 1"):
            ControlActor(Names(), tmp_path / "control.sock", {}, **limits)
        assert not (tmp_path / "control.sock").exists()


@pytest.mark.parametrize(("msg", "complaint", "code"), [
    ({"type": "AgentSync", "node": None, "apps": [None]},
     "AgentSync.node: expected a string, got null", 2),
    ({"type": "Tick", "kind": 7}, "Tick.kind: expected a string, got int", 2),
    ({"type": "RegisterEndpoint", "instance": {
        "type": "InstanceInfo", "id": "x@node-1#1", "app": "x", "node": "node-1",
        "digest": "d", "state": "Ready", "child": "c", "url": "http://127.0.0.1:1"}},
     "RegisterEndpoint is sent only by the mesh's own actors", 2),
    (None, "a message is an object", 2),
    ({"type": "Nope"}, "unknown message type 'Nope'", 2),
])
def test_a_message_that_does_not_fit_never_reaches_the_actor(
        control_factory: Callable[..., Control], msg: Any, complaint: str, code: int) -> None:
    ctl = control_factory()
    for op in ("tell", "ask"):
        with pytest.raises(ControlError, match=None) as caught:
            ctl.client.request(op, to="probe", msg=msg)
        assert complaint in str(caught.value)
        assert caught.value.exit_code == code
    assert ctl.client.request("ask", to="probe", msg=to_wire(Tick("ok"))) == "got it"
    assert ctl.recorder.ask(GetInfo(), timeout=5.0) == [Tick("ok")]


@pytest.mark.parametrize(("fields", "complaint"), [
    ({"to": 3}, "'to' must be an actor's name"),
    ({"to": "probe", "ask_timeout": "5"}, "'ask_timeout' must be a number"),
    ({"to": "probe", "ask_timeout": -1}, "'ask_timeout' must be a number"),
    ({"to": "probe", "ask_timeout": 1e9}, "'ask_timeout' must be a number"),
])
def test_a_mistyped_ask_is_refused(control_factory: Callable[..., Control],
                                   fields: dict[str, Any], complaint: str) -> None:
    ctl = control_factory()
    with pytest.raises(ControlError, match=complaint) as caught:
        ctl.client.request("ask", msg=to_wire(Tick()), **fields)
    assert caught.value.exit_code == 2
    assert ctl.recorder.ask(GetInfo(), timeout=5.0) == []
