"""A real ``mycelium up`` for the edge tests that need the whole mesh (descriptors, ejection).

The mesh may be started with a lowered ``RLIMIT_NOFILE`` (soft = hard), as a user's
``ulimit -n`` would: a tiny wrapper sets the limit, then execs the mesh.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mycelium.home import Home
from mycelium.operator.control import ControlClient
from tests.meshkit import REPO, UpProcess, free_port, private_home, published, repo_env

HELLO = REPO / "examples" / "hello" / "hello"
ENV = repo_env()
ENV.pop("MYCELIUM_HOME", None)

_LIMITED = ("import os, resource, sys; n = int(sys.argv[1]); "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
            "os.execv(sys.executable, [sys.executable, '-m', 'mycelium', *sys.argv[2:]])")


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the mesh may be busy restarting something
            last = exc
        time.sleep(0.05)  # polls a condition with a deadline
    raise AssertionError(f"timed out waiting for {what or predicate} (last error: {last})")


def cli(home: Path, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run ``mycelium <args> --home <home>`` as a real process."""
    return subprocess.run([sys.executable, "-m", "mycelium", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout, env=ENV, check=False)


class EdgeMesh(UpProcess):
    """``mycelium up`` on ``home`` with its own edge port, optionally under ``nofile``."""

    def __init__(self, home: Path, nodes: int = 2, nofile: int | None = None,
                 port: int | None = None) -> None:
        self.home = home
        self.port = free_port() if port is None else port
        args = ["up", "--home", str(home), "--edge-port", str(self.port), "--nodes", str(nodes)]
        if nofile is None:
            argv = [sys.executable, "-m", "mycelium", *args]
        else:
            argv = [sys.executable, "-c", _LIMITED, str(nofile), *args]
        super().__init__(argv, ENV)
        self.client = ControlClient(Home(home))
        self.wait_line("mesh up", 60.0)

    def instances(self, app: str) -> list[dict[str, Any]]:
        """The app's instances as ``status --json`` shows them."""
        for doc in self.client.request("status", app=app)["apps"]:
            if doc["app"] == app:
                return list(doc["instances"])
        return []

    def ready(self, app: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Wait until exactly ``count`` instances of ``app`` are Ready; return them."""
        def check() -> list[dict[str, Any]] | None:
            insts = [i for i in self.instances(app) if i["state"] == "Ready"]
            return insts if len(insts) == count else None
        result: list[dict[str, Any]] = wait_until(check, timeout, f"{count} Ready {app}")
        return result


@pytest.fixture(scope="session")
def hello_spores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A template home with a key and two apps of the hello workload published."""
    root = tmp_path_factory.mktemp("edge-template") / "home"
    return root, published(root, {name: (HELLO, {"name": name, "version": "1.0.0"})
                                  for name in ("hello", "other")})


@pytest.fixture
def mesh_home(tmp_path: Path, hello_spores: tuple[Path, dict[str, str]]) -> Iterator[Path]:
    """A private copy of the template home; no workload of it may survive the test."""
    yield from private_home(hello_spores[0], tmp_path / "home")
