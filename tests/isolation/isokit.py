"""What the isolation tests share: a mesh started with a chosen environment, edge requests, and
the processes an instance left behind."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from mesh_helpers import ENV, MeshProcess, cli

from mycelium.home import Home
from mycelium.operator.control import ControlClient
from tests.meshkit import UpProcess, free_port

__all__ = ["MeshWithEnv", "deploy", "escapees", "get", "needs_root", "post"]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dynamic uids need a root mesh")


class MeshWithEnv(MeshProcess):
    """``mycelium up`` like :class:`MeshProcess`, with extra variables in its environment."""

    def __init__(self, home: Path, extra: dict[str, str], nodes: int = 1) -> None:
        self.home = home
        self.port = free_port()
        UpProcess.__init__(
            self, [sys.executable, "-m", "mycelium", "up", "--home", str(home), "--edge-port",
                   str(self.port), "--nodes", str(nodes)], {**ENV, **extra})
        self.client = ControlClient(Home(home))
        self.wait_line("mesh up", 60.0)


def get(mesh: MeshProcess, app: str, path: str) -> Any:
    """GET ``/{app}{path}`` through the edge, as JSON."""
    with urllib.request.urlopen(f"{mesh.url}/{app}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def post(mesh: MeshProcess, app: str, path: str, doc: Any) -> Any:
    """POST JSON to ``/{app}{path}`` through the edge; the JSON answer."""
    req = urllib.request.Request(f"{mesh.url}/{app}{path}", data=json.dumps(doc).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def deploy(home: Path, app: str, digest: str, *args: str) -> None:
    """``mycelium deploy`` that must succeed."""
    done = cli(home, "deploy", app, digest, *args)
    assert done.returncode == 0, done.stderr


def escapees(inst: dict[str, Any]) -> list[psutil.Process]:
    """The escaper's ``sleep 3604`` (setsid) and ``sleep 3605`` (double fork, cwd /) of one
    instance (a ``status --json`` instance), found by its id and HOME in their environment."""
    home = str(Path(inst["dir"]).parent / "home")
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.info["cmdline"] not in (["sleep", "3604"], ["sleep", "3605"]):
                continue
            env = proc.environ()
            if env.get("MYCELIUM_INSTANCE") == inst["id"] and env.get("HOME") == home:
                found.append(proc)
        except psutil.Error:
            continue
    return found
