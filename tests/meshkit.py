"""What the mesh, dashboard, multihost and reliability suites share: a template home with
spores published, a ``mycelium up`` subprocess with its output collected, free ports, and the
teardown that kills leftovers.

Imported as ``tests.meshkit`` (pytest puts the repository root on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

from mycelium.home import Home
from mycelium.spores import keygen, publish

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "UpProcess", "edge_worker_pids", "forget_machine_state", "free_port",
           "kill_leftovers", "private_home", "published", "repo_env", "stopped_cleanly",
           "workload_pids"]


def published(root: Path, spores: Mapping[str, tuple[Path, Mapping[str, Any]]],
              config: str | None = None) -> dict[str, str]:
    """Make ``root`` a template home: a signing key, ``config`` as its mycelium.toml, and
    every ``key: (binary, manifest)`` of ``spores`` published; returns each key's digest."""
    template = Home(root).ensure()
    keygen(template)
    if config is not None:
        (root / "mycelium.toml").write_text(config)
    return {key: publish(template, binary=binary, manifest=manifest)
            for key, (binary, manifest) in spores.items()}


def repo_env() -> dict[str, str]:
    """This process's environment with the repository first on ``PYTHONPATH``."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}


_HANDED: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, never the same twice in a run.

    Taken above the kernel's ephemeral range when there is room there: a port the kernel picks
    for a bind to port 0 comes from that range, the one every outgoing connection's local port
    comes from, so between this pick and the mesh's bind a client of a load test could take it
    ("Address already in use"). Workloads take theirs below the range (``launch.workload_port``).
    """
    try:
        high = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        high = 65535
    for _ in range(64 if high <= 64535 else 0):
        port = random.randrange(high + 1, 65536)
        if port in _HANDED:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workload_pids(home: Path) -> list[int]:
    """Every live process whose command line runs a binary from this home's instances (in the
    home, or outside it when the workloads' uid cannot reach the home)."""
    from mycelium.node.isolation import fallback_instances_dir

    markers = (str(home / "instances"), str(fallback_instances_dir(Path(home).absolute())))
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(m in part for part in proc.info["cmdline"] or () for m in markers):
                pids.append(proc.info["pid"])
        except (psutil.Error, TypeError):
            continue
    return pids


def edge_worker_pids(home: Path) -> list[int]:
    """Every live edge worker process of this home (its command line names the home's run
    directory): after a kill -9 of the mesh they keep serving until adopted or stopped."""
    marker = str(Path(home) / "run")
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmdline = proc.info["cmdline"] or ()
            if proc.info["status"] != psutil.STATUS_ZOMBIE and "mycelium.edge.worker" in \
                    cmdline and marker in cmdline:
                pids.append(proc.info["pid"])
        except (psutil.Error, TypeError):
            continue
    return pids


def kill_leftovers(home: Path) -> list[int]:
    """Last-resort cleanup for a failed test: SIGKILL every workload of this home (and its
    edge workers, which a test that killed the mesh may have left serving: not counted)."""
    for pid in edge_worker_pids(home):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    pids = workload_pids(home)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    return pids


def clear_cgroups(home: Path) -> list[int]:
    """Last-resort cleanup: SIGKILL what is left in this home's cgroup v2 tree (processes that
    left their instance in every other way) and remove the tree's directories."""
    from mycelium.node.cgroups import CgroupTree

    tree = CgroupTree.detect(Path(home))
    if tree is None:
        return []
    pids = tree.reap()
    tree.remove()
    return pids


class UpProcess:
    """A ``mycelium up`` subprocess whose merged stdout and stderr lines are collected.

    Subclasses build the command line and wait for the line that says they are up.
    """

    def __init__(self, argv: list[str], env: dict[str, str], label: str = "the mesh") -> None:
        self.lines: list[str] = []
        self._label = label
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, text: str, timeout: float = 15.0) -> str:
        """Wait until a stdout line contains ``text``.

        Raises:
            AssertionError: after ``timeout``, or once the process has exited without it.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no {text!r} line from {self._label}; got:\n"
                                         + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 0.2))

    def kill9(self) -> None:
        """SIGKILL the process itself (its workloads survive it, like a crashed machine's)."""
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


def private_home(template: Path, target: Path) -> Iterator[Path]:
    """Fixture body: a copy of ``template`` at ``target``; no workload of it may survive.

    Raises:
        AssertionError: at teardown, naming the workloads that had to be killed.
    """
    shutil.copytree(template, target, symlinks=True)
    yield target
    leftovers = kill_leftovers(target)
    leftovers += [pid for pid in clear_cgroups(target) if pid not in leftovers]
    forget_machine_state(target)
    assert not leftovers, f"workload processes survived the test: {leftovers}"


def forget_machine_state(home: Path) -> None:
    """Remove what a root mesh of ``home`` kept outside it: its instances directory under
    /var/lib/mycelium and its claim of a uid range (the mesh keeps both for the home's next
    ``up``; a test's home is gone after the test)."""
    from mycelium.node.isolation import STATE_ROOT, fallback_instances_dir

    home = Path(home).absolute()
    shutil.rmtree(fallback_instances_dir(home).parent, ignore_errors=True)
    with contextlib.suppress(OSError):
        for claim in (STATE_ROOT / "uid-ranges").iterdir():
            with contextlib.suppress(OSError):
                if claim.read_text().strip() == str(home):
                    claim.unlink()


@contextlib.contextmanager
def stopped_cleanly(proc: UpProcess, home: Path) -> Iterator[None]:
    """Stop ``proc`` on the way out and check it exited 0 and left no workload of ``home``.

    Raises:
        AssertionError: on a non-zero exit (with the last output lines) or a leftover workload.
    """
    try:
        yield
    finally:
        code = proc.stop()
        assert code == 0, "\n".join(proc.lines[-30:])
        assert workload_pids(home) == []
