"""A running ``mycelium up`` refuses what does not fit through its control socket, and keeps
working afterwards.

The cases are the ones seen in the field: an ``AgentSync`` told with nulls for its strings
(``status`` and ``tree`` then failed until a restart) and a forged ``RegisterEndpoint`` (it put
``http://127.0.0.1:1`` into the edge's routes). Both now get an error reply; the fabric and the
edge never see them; status, tree and the edge's requests go on as before. The messages the
actors exchange among themselves (``ClaimSwitch``, ``ReleaseSwitch``, ``IsRouted``) now cross
the socket too.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mycelium.home import Home
from mycelium.messages import (
    AgentSync,
    ClaimSwitch,
    InstanceInfo,
    IsRouted,
    RegisterEndpoint,
    ReleaseSwitch,
    to_wire,
)
from mycelium.operator.client import ControlClient, ControlError
from mycelium.spores import keygen, publish
from tests.meshkit import REPO, UpProcess, free_port, private_home, repo_env, stopped_cleanly

HELLO = REPO / "examples" / "hello" / "hello"
ENV = repo_env()
ENV.pop("MYCELIUM_HOME", None)
FORGED_URL = "http://127.0.0.1:1"


class Mesh(UpProcess):
    """``mycelium up`` with two nodes (the fixture deploys hello on both)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        super().__init__([sys.executable, "-m", "mycelium", "up", "--home", str(home),
                          "--edge-port", str(self.port), "--nodes", "2"], ENV)
        self.client = ControlClient(Home(home))
        self.wait_line("mesh up", 60.0)

    def urls(self) -> list[str]:
        """The URL of every Ready instance the status document shows."""
        docs: list[dict[str, Any]] = self.client.request("status")["apps"]
        return [i["url"] for a in docs for i in a["instances"] if i["state"] == "Ready"]

    def wait_ready(self, count: int, timeout: float = 60.0) -> None:
        """Wait until ``count`` instances are Ready."""
        deadline = time.monotonic() + timeout
        while len(self.urls()) != count:
            assert time.monotonic() < deadline, f"not {count} Ready: {self.lines[-20:]}"
            time.sleep(0.05)

    def get(self) -> str:
        """One request through the edge to the hello app."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/hello/", timeout=10) as r:
            return str(r.read().decode())


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    template = Home(tmp_path / "template").ensure()
    keygen(template)
    digest = publish(template, binary=HELLO, manifest={"name": "hello", "version": "1"})
    for home in private_home(template.root, tmp_path / "home"):
        proc = Mesh(home)
        with stopped_cleanly(proc, home):
            deployed = subprocess.run(
                [sys.executable, "-m", "mycelium", "deploy", "hello", digest, "--max", "2",
                 "--home", str(home)], capture_output=True, text=True, env=ENV, timeout=120,
                check=False)
            assert deployed.returncode == 0, deployed.stderr
            proc.wait_ready(2)
            yield proc


def _refused(mesh: Mesh, op: str, to: str, msg: Any) -> ControlError:
    with pytest.raises(ControlError) as caught:
        mesh.client.request(op, to=to, msg=msg)
    return caught.value


def _still_serving(mesh: Mesh, urls: list[str]) -> None:
    assert sorted(mesh.urls()) == sorted(urls)
    assert FORGED_URL not in mesh.urls()
    tree = mesh.client.request("tree")
    assert tree["children"]
    assert mesh.get()  # the edge still routes to the real instances only


def test_an_agent_sync_with_nulls_is_refused_and_status_and_tree_keep_working(
        mesh: Mesh) -> None:
    urls = mesh.urls()
    assert len(urls) == 2
    bad = {"type": "AgentSync", "node": None, "apps": [None],
           "instances": [{**to_wire(InstanceInfo(id="x", app="hello", node="node-1",
                                                 digest="d", state="Ready", child="c")),
                          "app": None}]}
    for op in ("tell", "ask"):
        error = _refused(mesh, op, "fabric", bad)
        assert "AgentSync.node: expected a string, got null" in str(error)
        assert error.exit_code == 2
    _still_serving(mesh, urls)

    # well-typed, it states what an agent runs: only the mesh's own agents may say that
    error = _refused(mesh, "tell", "fabric", to_wire(AgentSync("node-1", ("ghost",))))
    assert "AgentSync is sent only by the mesh's own actors" in str(error)
    _still_serving(mesh, urls)


def test_a_forged_register_endpoint_never_reaches_the_routes(mesh: Mesh) -> None:
    urls = mesh.urls()
    forged = RegisterEndpoint(InstanceInfo(id="hello@node-1#99", app="hello", node="node-1",
                                           digest="f" * 64, state="Ready", child="forged",
                                           url=FORGED_URL))
    error = _refused(mesh, "tell", "fabric", to_wire(forged))
    assert "RegisterEndpoint is sent only by the mesh's own actors" in str(error)
    assert error.exit_code == 2
    mistyped = {**to_wire(forged), "instance": FORGED_URL}
    assert "expected InstanceInfo, got str" in str(_refused(mesh, "tell", "fabric", mistyped))
    _still_serving(mesh, urls)
    assert mesh.client.ask("edge", IsRouted(FORGED_URL)) is False
    assert mesh.client.ask("edge", IsRouted(urls[0])) is True


def test_the_switch_messages_cross_the_control_socket(mesh: Mesh) -> None:
    assert mesh.client.ask("fabric", ClaimSwitch("other", "node-1", lease=1.0)) is True
    mesh.client.tell("fabric", ReleaseSwitch("other", "node-1"))
    assert mesh.client.request("status")["apps"]
