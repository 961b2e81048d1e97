"""A real etcd for the multihost tests: one process on free loopback ports with a tmp data dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mycelium.fabric.etcd_client import EtcdClient, EtcdUnavailable

__all__ = ["EtcdServer", "etcd_binary", "free_port", "wait_for"]


def free_port() -> int:
    """A port the kernel just gave us on 127.0.0.1 (closed again at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def etcd_binary() -> str:
    """The etcd binary; skip outside CI when it is missing, fail in CI."""
    path = shutil.which("etcd")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("etcd is not installed (CI must install etcd-server: see .ci/run)")
        pytest.skip("etcd binary not found (apt-get install etcd-server)")
    return path


class EtcdServer:
    """One etcd member on 127.0.0.1; ``start()`` returns once it answers."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``etcd://127.0.0.1:PORT`` for ``mycelium up --fabric``."""
        return f"etcd://127.0.0.1:{self.client_port}"

    def client(self) -> EtcdClient:
        """A client of this server."""
        return EtcdClient([("127.0.0.1", self.client_port)], timeout=2.0)

    def start(self) -> EtcdServer:
        """Start (or restart, same data) etcd and wait until it answers."""
        c, p = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        log = open(self.data_dir.parent / "etcd.log", "ab")  # noqa: SIM115 - kept by the child
        self.proc = subprocess.Popen(
            [etcd_binary(), "--name", "t", "--data-dir", str(self.data_dir),
             "--listen-client-urls", c, "--advertise-client-urls", c,
             "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", f"t={p}", "--logger", "zap", "--log-level", "error"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        client = self.client()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"etcd exited with {self.proc.returncode}")
            try:
                client.status()
            except EtcdUnavailable:
                return False
            return True

        wait_for(up, 20.0, "etcd to answer")
        return self

    def kill(self) -> None:
        """SIGKILL etcd and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
