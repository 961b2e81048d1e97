"""The parts that keep a mass start linear: which reports move the routes, and the exec gate
that keeps a binary being written from being exec'd (no mesh, no sleeps)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.fabric.route_push import moves_routes
from mycelium.messages import InstanceInfo
from mycelium.node.execgate import ExecGate
from mycelium.node.launch import workload_port
from mycelium.states import InstanceState

pytestmark = pytest.mark.timeout(30)

STATES = list(InstanceState)


def info(state: InstanceState, restarts: int = 0, serving: bool = True,
         url: str | None = "http://127.0.0.1:9") -> InstanceInfo:
    return InstanceInfo(id="tiny@node-1#1", app="tiny", node="node-1", digest="d",
                        state=state, child="tiny", url=url, restarts=restarts,
                        serving=serving)


def routed(i: InstanceInfo | None) -> bool:
    return i is not None and i.state == InstanceState.READY and i.serving and i.url is not None


@given(st.one_of(st.none(), st.builds(info, st.sampled_from(STATES), st.integers(0, 3),
                                      st.booleans())),
       st.builds(info, st.sampled_from(STATES), st.integers(0, 3), st.booleans()))
def test_a_report_moves_the_routes_exactly_when_an_endpoint_or_a_restart_total_moves(
        old: InstanceInfo | None, new: InstanceInfo) -> None:
    total_before = 0 if old is None else old.restarts
    total_after = 0 if new.state == InstanceState.STOPPED else new.restarts
    assert moves_routes(old, new) == (routed(old) or routed(new)
                                      or total_before != total_after)


def test_launching_reports_of_a_fresh_instance_compute_no_table() -> None:
    assert not moves_routes(None, info(InstanceState.LAUNCHING))
    assert moves_routes(info(InstanceState.LAUNCHING), info(InstanceState.READY))
    assert moves_routes(info(InstanceState.READY), info(InstanceState.STOPPED))
    assert moves_routes(None, info(InstanceState.LAUNCHING, restarts=2))  # the total moves


def test_a_write_ends_only_after_the_spawns_begun_before_it_ended() -> None:
    gate = ExecGate()
    in_spawn, release = threading.Event(), threading.Event()
    written = threading.Event()

    def spawner() -> None:
        with gate.spawning():  # a fork that may have copied the writer's descriptor
            in_spawn.set()
            release.wait(10)

    def writer() -> None:
        with gate.writing():
            pass
        written.set()

    s = threading.Thread(target=spawner)
    s.start()
    assert in_spawn.wait(5)
    w = threading.Thread(target=writer)
    w.start()
    assert not written.wait(0.2)  # a bounded look: it must still be waiting for the spawn
    with gate.spawning():  # a spawn begun after the write's end never waits, nor holds it
        pass
    assert not written.is_set()
    release.set()
    assert written.wait(5)
    s.join(5)
    w.join(5)
    assert gate.in_flight() == 0


def test_spawns_never_wait_for_writes() -> None:
    gate = ExecGate()
    both_in = threading.Barrier(2, timeout=5)

    def spawner() -> None:
        with gate.spawning():
            both_in.wait()  # two spawns at once: the barrier opens only if both got in

    threads = [threading.Thread(target=spawner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not both_in.broken
    with gate.writing():  # nothing in flight: a write does not wait at all
        pass


def test_workload_ports_come_from_below_the_ephemeral_range_and_never_twice() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [workload_port("127.0.0.1") for _ in range(200)]
    assert len(set(ports)) == 200
    if low > 11000:  # room below the range: outgoing connections never take these
        assert all(10000 <= p < low for p in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # it was free
