"""Helpers for the mesh tests: a real ``mycelium up`` subprocess and CLI runs against it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from mycelium.home import Home
from mycelium.operator.control import ControlClient

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
ENV.pop("MYCELIUM_HOME", None)


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(home: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``mycelium <args> --home <home>`` as a real process."""
    return subprocess.run([sys.executable, "-m", "mycelium", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout, env=ENV, check=False)


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the mesh may be restarting an actor
            last_exc = exc
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate} (last error: {last_exc})")


def workload_pids(home: Path) -> list[int]:
    """Every live process whose command line runs a binary from this home's instances."""
    marker = str(home / "instances")
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(marker in part for part in proc.info["cmdline"] or ()):
                pids.append(proc.info["pid"])
        except (psutil.Error, TypeError):
            continue
    return pids


class MeshProcess:
    """``mycelium up --home H --edge-port P --nodes N`` in the background."""

    def __init__(self, home: Path, nodes: int = 3) -> None:
        self.home = home
        self.port = free_port()
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mycelium", "up", "--home", str(home), "--edge-port",
             str(self.port), "--nodes", str(nodes)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
        threading.Thread(target=self._read, daemon=True).start()
        self.client = ControlClient(Home(home))
        self.wait_line("mesh up", 60.0)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, text: str, timeout: float = 15.0) -> str:
        """Wait until a stdout line contains ``text``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._more()):
                    raise AssertionError(f"no {text!r} line from the mesh; got:\n"
                                         + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 0.2))

    def _more(self) -> bool:
        return False

    @property
    def url(self) -> str:
        """The edge's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def status(self, app: str | None = None) -> dict[str, Any]:
        """``status --json`` through the control socket."""
        result: dict[str, Any] = self.client.request("status", app=app)
        return result

    def app(self, app: str) -> dict[str, Any]:
        """One app's status document."""
        for doc in self.status(app)["apps"]:
            if doc["app"] == app:
                return dict(doc)
        raise AssertionError(f"no app {app} in status")

    def ready(self, app: str, count: int, digest: str | None = None) -> list[dict[str, Any]]:
        """Wait until ``count`` instances of ``app`` (of ``digest``) are Ready; return them."""
        def check() -> list[dict[str, Any]] | None:
            insts = [i for i in self.app(app)["instances"] if i["state"] == "Ready"
                     and (digest is None or i["digest"] == digest)]
            return insts if len(insts) == count else None
        result: list[dict[str, Any]] = wait_until(check, 40.0, f"{count} Ready {app}")
        return result

    def kill9(self) -> None:
        """SIGKILL the mesh process itself (its workloads survive it)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait (SIGKILL after 60 s); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def kill_leftovers(home: Path) -> list[int]:
    """Last-resort cleanup for a failed test: SIGKILL every workload of this home."""
    pids = workload_pids(home)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    return pids
