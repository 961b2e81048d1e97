"""No number of client connections can starve the mesh of descriptors (``ulimit -n 1024``)."""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from edge_mesh import EdgeMesh, cli, wait_until

from tests.meshkit import stopped_cleanly


class Pressure:
    """Holds ``count`` idle connections to the edge, reopening every one the edge closes."""

    def __init__(self, port: int, count: int) -> None:
        # the client side needs its own descriptors: an in-process mesh of an earlier test may
        # have set this process's limit (a mesh arms its own limits for its workloads)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = count + 512
        if soft < want:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        self.port = port
        self.count = count
        self.sel = selectors.DefaultSelector()  # epoll: descriptors beyond 1024 are fine
        self.open = 0
        self.closed_by_edge = 0
        self.stop = threading.Event()
        self.holding = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _connect(self) -> None:
        s = socket.socket()
        s.settimeout(5.0)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            return
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ)
        self.open += 1

    def _run(self) -> None:
        while not self.stop.is_set():
            for _ in range(min(200, self.count - self.open)):  # reopen in modest batches
                self._connect()
            if self.open >= self.count or (self.closed_by_edge and
                                           self.open + self.closed_by_edge >= self.count):
                self.holding.set()  # all held, or the edge refuses the rest: it is full
            for key, _ in self.sel.select(0.3):
                self._drop(key.fileobj)  # type: ignore[arg-type]

    def _drop(self, s: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if s.recv(65536):
                return  # not expected: an idle connection gets no bytes
        self.sel.unregister(s)
        s.close()
        self.open -= 1
        self.closed_by_edge += 1

    def halt(self) -> None:
        """Stop reopening; the connections still open stay open."""
        self.stop.set()
        self.thread.join(10)

    def wait_all_closed(self, timeout: float) -> None:
        """Wait until the edge closed every connection still held."""
        deadline = time.monotonic() + timeout
        while self.open:
            assert time.monotonic() < deadline, f"{self.open} connections still open"
            for key, _ in self.sel.select(0.3):
                self._drop(key.fileobj)  # type: ignore[arg-type]

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()


@pytest.mark.timeout(240)
def test_1100_idle_connections_under_ulimit_1024_never_starve_probes_spawns_or_deploys(
        mesh_home: Path, hello_spores: tuple[Path, dict[str, str]]) -> None:
    digests = hello_spores[1]
    # [node] nofile 1024 too: as root the mesh would otherwise raise its own limit to the
    # workloads' 65536, and the 1024 this test is about would not hold
    (mesh_home / "mycelium.toml").write_text("[edge]\nheader_timeout = 5.0\n"
                                             "[node]\nnofile = 1024\n")
    mesh = EdgeMesh(mesh_home, nodes=2, nofile=1024)
    with stopped_cleanly(mesh, mesh_home):
        deployed = cli(mesh_home, "deploy", "hello", digests["hello"], "--min", "2", "--max",
                       "2")
        assert deployed.returncode == 0, deployed.stderr
        before = mesh.ready("hello", 2)
        pressure = Pressure(mesh.port, 1100)
        try:
            assert pressure.holding.wait(120), "could not fill the edge with 1,100 connections"
            wait_until(lambda: pressure.closed_by_edge > 0, 30, "the edge refusing some")
            # every workload stays Ready while the edge is full
            assert {i["pid"] for i in mesh.ready("hello", 2)} == {i["pid"] for i in before}
            # a kill -9 is healed: the respawn gets its pipes and log files
            victim = before[0]
            os.kill(victim["pid"], signal.SIGKILL)
            wait_until(lambda: {i["pid"] for i in mesh.ready("hello", 2)}
                       != {i["pid"] for i in before}, 60, "the killed instance replaced")
            # and a deploy succeeds
            other = cli(mesh_home, "deploy", "other", digests["other"])
            assert other.returncode == 0, other.stderr
            mesh.ready("other", 1)
            assert pressure.open >= 300  # the edge held its share of the connections
            pressure.halt()
            pressure.wait_all_closed(timeout=5.0 + 30.0)  # header_timeout, then closed
        finally:
            pressure.halt()
            pressure.close()
        lines = "\n".join(mesh.lines)
        assert "Too many open files" not in lines
        assert "health check failed" not in lines
