"""Helpers for the mesh tests: a real ``mycelium up`` subprocess and CLI runs against it."""

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
from tests.meshkit import (
    REPO,
    UpProcess,
    free_port,
    kill_leftovers,
    private_home,
    repo_env,
    stopped_cleanly,
    workload_pids,
)

__all__ = ["ENV", "HELLO", "HELLO_SPORES", "REPO", "TESTER", "MeshProcess", "cli",
           "kill_leftovers", "wait_until", "workload_pids"]

ENV = repo_env()
ENV.pop("MYCELIUM_HOME", None)
HELLO = REPO / "examples" / "hello" / "hello"
#: The test workload of the mesh tests (its behaviour chosen by TESTER_MODE).
TESTER = Path(__file__).resolve().parent / "workloads" / "tester"
#: hello in two versions, for the templates of the mesh and scale tests (``published()``).
HELLO_SPORES: dict[str, tuple[Path, dict[str, Any]]] = {
    "hello": (HELLO, {"name": "hello", "version": "1.0.0"}),
    "hello-v2": (HELLO, {"name": "hello", "version": "2.0.0",
                         "env": {"HELLO_VERSION": "2.0.0"}}),
}


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


class MeshProcess(UpProcess):
    """``mycelium up --home H --edge-port P --nodes N`` in the background."""

    def __init__(self, home: Path, nodes: int = 3, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        super().__init__(
            [sys.executable, "-m", "mycelium", "up", "--home", str(home), "--edge-port",
             str(self.port), "--nodes", str(nodes)], ENV if env is None else env)
        self.client = ControlClient(Home(home))
        self.wait_line("mesh up", 60.0)

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


# -- fixtures shared by the mesh and reliability suites (each conftest imports them; each
# provides its own ``spores``: a template home and its published digests) ----------------

@pytest.fixture
def home(tmp_path: Path, spores: tuple[Path, dict[str, str]]) -> Iterator[Path]:
    """A private copy of the template home; no workload of it may survive the test."""
    yield from private_home(spores[0], tmp_path / "home")


@pytest.fixture
def digests(spores: tuple[Path, dict[str, str]]) -> dict[str, str]:
    """The published digests by key (each suite's ``spores`` fixture says which)."""
    return spores[1]


@pytest.fixture
def mesh(home: Path) -> Iterator[MeshProcess]:
    """A running 3-node mesh on its own home and edge port; stopped and checked afterwards."""
    proc = MeshProcess(home)
    with stopped_cleanly(proc, home):
        yield proc
