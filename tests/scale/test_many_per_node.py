"""Many instances per node, end to end: a real mesh, capacity in status, drains under load."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest
from mesh_helpers import MeshProcess, cli, wait_until


class Load:
    """Requests through the edge in a loop until stopped; counts what failed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as resp:
                    resp.read()
                self.ok += 1
            except (urllib.error.URLError, OSError) as exc:
                self.failed.append(str(exc))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def _by_node(mesh: MeshProcess, app: str) -> Counter[str]:
    return Counter(i["node"] for i in mesh.app(app)["instances"] if i["state"] == "Ready")


@pytest.mark.timeout(180)
def test_max_beyond_nodes_spreads_reserves_and_drains_without_a_failed_request(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    result = cli(mesh.home, "deploy", "hello", digests["hello"], "--min", "7", "--max", "7",
                 "--cpu", "0.1", "--mem", "16")
    assert result.returncode == 0, result.stderr
    mesh.ready("hello", 7)
    assert sorted(_by_node(mesh, "hello").values()) == [2, 2, 3]
    doc = mesh.status()
    app = doc["apps"][0]
    assert app["desired"] == 7 and app["state"] == "running"
    for node in doc["nodes"]:
        n = _by_node(mesh, "hello")[node["name"]]
        assert node["cpu"]["reserved"] == pytest.approx(0.1 * n)
        assert node["mem_mb"]["reserved"] == 16 * n
        assert node["cpu"]["free"] == pytest.approx(node["cpu"]["capacity"] - 0.1 * n)
        assert node["mem_mb"]["free"] == node["mem_mb"]["capacity"] - 16 * n

    tree = orjson.loads(cli(mesh.home, "tree", "--json").stdout)
    workers: list[dict[str, object]] = []

    def walk(node: dict[str, object]) -> None:
        if node.get("type") == "worker" and node.get("instance"):
            workers.append(node)
        for child in node.get("children") or ():  # type: ignore[attr-defined]
            walk(child)
    walk(tree)
    assert len({w["instance"]["id"] for w in workers}) == 7  # type: ignore[index]
    drawn = cli(mesh.home, "tree").stdout
    assert drawn.count("cpu ") >= 3 and "mem " in drawn
    assert "(cpu 0.3/" in cli(mesh.home, "status").stdout

    with Load(f"{mesh.url}/hello/") as load:
        wait_until(lambda: load.ok > 5, 10, "requests flowing")
        drained = cli(mesh.home, "node", "drain", "node-1", "--timeout", "60")
        assert drained.returncode == 0, drained.stderr
        assert "drained node-1" in drained.stdout
        after = load.ok
        wait_until(lambda: load.ok > after + 5, 10, "requests after the drain")
    assert load.failed == []
    by_node = _by_node(mesh, "hello")
    assert "node-1" not in by_node and sum(by_node.values()) == 7
    states = {n["name"]: n["state"] for n in mesh.status()["nodes"]}
    assert states == {"node-1": "drained", "node-2": "up", "node-3": "up"}

    # nothing new goes to a drained node: scale up stays on the others
    assert cli(mesh.home, "deploy", "hello", digests["hello"], "--min", "8", "--max", "8",
               "--cpu", "0.1", "--mem", "16").returncode == 0
    mesh.ready("hello", 8)
    assert "node-1" not in _by_node(mesh, "hello")

    # a rollout replaces them all, per instance
    v2 = digests["hello-v2"]
    up = cli(mesh.home, "deploy", "hello", v2, "--min", "8", "--max", "8", "--cpu", "0.1",
             "--mem", "16")
    assert up.returncode == 0, up.stderr
    mesh.ready("hello", 8, v2)
    wait_until(lambda: all(i["digest"] == v2 for i in mesh.app("hello")["instances"]), 30,
               "blue gone")

    assert cli(mesh.home, "node", "undrain", "node-1").returncode == 0
    states = {n["name"]: n["state"] for n in mesh.status()["nodes"]}
    assert states["node-1"] == "up"


@pytest.mark.timeout(150)
def test_drain_refusals_and_the_state_survives_a_restart(home: Path,
                                                         digests: dict[str, str]) -> None:
    (home / "mycelium.toml").write_text("[node]\nmem_mb = 64\n")
    mesh = MeshProcess(home, nodes=2)
    try:
        unknown = cli(home, "node", "drain", "node-9")
        assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown node")
        assert unknown.stderr.count("\n") == 1
        assert cli(home, "deploy", "hello", digests["hello"], "--max", "2",
                   "--mem", "40").returncode == 0
        mesh.ready("hello", 2)
        # node-2 has no room for node-1's instance: it stays, the drain says so (exit 1)
        stuck = cli(home, "node", "drain", "node-1", "--timeout", "20")
        assert stuck.returncode == 1, stuck.stderr
        assert "nowhere to go" in stuck.stderr and "hello" in stuck.stderr
        assert stuck.stderr.strip().splitlines()[-1].startswith("error: ")
        assert _by_node(mesh, "hello") == {"node-1": 1, "node-2": 1}
        assert {n["name"]: n["state"] for n in mesh.status()["nodes"]}["node-1"] == "draining"
        # scaled down to one: node-1's instance may go now, the drain completes
        assert cli(home, "deploy", "hello", digests["hello"], "--max", "1",
                   "--mem", "40").returncode == 0
        assert cli(home, "node", "drain", "node-1", "--timeout", "30").returncode == 0
        assert _by_node(mesh, "hello") == {"node-2": 1}
        # the last open node with an app on it: refused at once, nothing changed
        last = cli(home, "node", "drain", "node-2")
        assert last.returncode == 1 and last.stderr.startswith("error: cannot drain node-2")
        assert {n["name"]: n["state"] for n in mesh.status()["nodes"]}["node-2"] == "up"
        assert mesh.stop() == 0
        mesh = MeshProcess(home, nodes=2)  # drains are durable
        assert {n["name"]: n["state"] for n in mesh.status()["nodes"]}["node-1"] == "drained"
        mesh.ready("hello", 1)
        assert cli(home, "node", "undrain", "node-1").returncode == 0
        assert cli(home, "deploy", "hello", digests["hello"], "--max", "2",
                   "--mem", "40").returncode == 0
        wait_until(lambda: _by_node(mesh, "hello") == {"node-1": 1, "node-2": 1}, 30,
                   "back on node-1")
        doc = orjson.loads(cli(home, "status", "--json").stdout)
        assert [n["state"] for n in doc["nodes"]] == ["up", "up"]
    finally:
        mesh.stop()
