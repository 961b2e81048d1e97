"""A replacement starts only after its predecessor's cleanup: a real TCP port is free again."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pykka
from sv_helpers import Crash, PortWorker, Recorder, ref_of

from supervisors import ChildSpec, SupFlags, restart_child, terminate_child

StartSup = Callable[..., pykka.ActorRef[Any]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_port_a_crashed_child_bound_is_free_when_its_replacement_starts(
    start_sup: StartSup, recorder: Recorder
) -> None:
    port, events = free_port(), []
    spec = ChildSpec("listener", lambda: PortWorker.start(port=port, events=events))
    sup = start_sup([spec], SupFlags(intensity=5))
    for n in range(1, 4):
        ref_of(sup, "listener").tell(Crash())
        recorder.wait("child_restarted", "listener", count=n)
        assert ref_of(sup, "listener").ask("port", timeout=5) == port
    assert recorder.events("start_error") == []
    assert events == ["bind", "release"] * 3 + ["bind"]


def test_the_port_is_free_after_terminate_child(start_sup: StartSup, recorder: Recorder) -> None:
    port, events = free_port(), []
    spec = ChildSpec("listener", lambda: PortWorker.start(port=port, events=events))
    sup = start_sup([spec])
    terminate_child(sup, "listener")
    assert events == ["bind", "release"]  # terminate_child returned after on_stop finished
    restart_child(sup, "listener")
    assert ref_of(sup, "listener").ask("port", timeout=5) == port
