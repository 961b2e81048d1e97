"""Flow E and the supervision tree under fire: killed workloads respawn with their slot's
restart count, crashed mesh actors restart without touching workloads, budgets are enforced."""

from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

import orjson
import pytest
from mesh_helpers import MeshProcess, cli, wait_until, workload_pids

from mycelium.messages import Crash


def serving(mesh: MeshProcess, app: str) -> bool:
    with urllib.request.urlopen(f"{mesh.url}/{app}/", timeout=5) as resp:
        return resp.status == 200


@pytest.mark.timeout(120)
def test_killed_workload_respawns_on_its_node_with_restarts_1(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "hello", digests["hello"], "--max", "3").returncode == 0
    before = {i["node"]: i for i in mesh.ready("hello", 3)}
    victim = before["node-2"]
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> dict | None:
        for i in mesh.app("hello")["instances"]:
            if i["node"] == "node-2" and i["state"] == "Ready" and i["pid"] != victim["pid"]:
                return i
        return None

    new = wait_until(replaced, 15, "a replacement on node-2")
    assert new["restarts"] == 1
    assert new["digest"] == victim["digest"]
    others = {i["node"]: i["pid"] for i in mesh.ready("hello", 3)}
    assert others["node-1"] == before["node-1"]["pid"]
    assert others["node-3"] == before["node-3"]["pid"]

    # the kill command signals the main process and prints its pid
    result = cli(mesh.home, "kill", "hello", "--node", "node-1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(before["node-1"]["pid"])]
    wait_until(lambda: any(i["node"] == "node-1" and i["restarts"] == 1 and i["state"] == "Ready"
                           for i in mesh.app("hello")["instances"]), 15, "node-1 respawn")

    logs = [orjson.loads(line) for line in cli(mesh.home, "logs", "--json",
                                               "--app", "hello").stdout.splitlines()]
    killed = [r for r in logs if r["event"] == "child_terminated"]
    assert any(r["reason"] == "killed by SIGKILL" and r["app"] == "hello" for r in killed)
    assert all({"ts", "event", "supervisor", "child", "app", "reason"} <= set(r) for r in logs)


@pytest.mark.timeout(120)
def test_crashing_fabric_edge_control_and_agent_keeps_workloads_serving(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "hello", digests["hello"], "--max", "3").returncode == 0
    pids = sorted(i["pid"] for i in mesh.ready("hello", 3))
    for name in ("fabric", "edge", "control", "node-1"):
        mesh.client.tell(name, Crash())
        mesh.wait_line(f"child_terminated {'agent' if name == 'node-1' else name}")
        wait_until(lambda n=name: n in mesh.client.request("names"), 10, f"{name} back")
        assert sorted(i["pid"] for i in mesh.ready("hello", 3)) == pids
        assert wait_until(lambda: serving(mesh, "hello"), 10, "edge serving")
    assert sorted(workload_pids(mesh.home)) == pids
    # the restarted fabric and agents still deploy, and the adopted apps still respawn
    assert cli(mesh.home, "deploy", "tester", digests["tester"], "--max", "1").returncode == 0
    victim = next(i for i in mesh.app("hello")["instances"] if i["node"] == "node-1")
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(lambda: any(i["node"] == "node-1" and i["state"] == "Ready" and i["restarts"] == 1
                           for i in mesh.app("hello")["instances"]), 30, "respawn after adoption")


@pytest.mark.timeout(120)
def test_max_instances_caps_placement_and_memory_budget_kills(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    result = cli(mesh.home, "deploy", "tester", digests["tester"], "--max", "3",
                 "--max-instances", "2")
    assert result.returncode == 0, result.stderr
    mesh.ready("tester", 2)
    doc = mesh.app("tester")
    assert doc["desired"] == 2 and len(doc["instances"]) == 2
    # scaling down gives the extra slot back
    assert cli(mesh.home, "deploy", "tester", digests["tester"], "--max", "1").returncode == 0
    wait_until(lambda: len(mesh.app("tester")["instances"]) == 1, 15, "scaled down to 1")

    result = cli(mesh.home, "deploy", "hog", digests["hog"], "--mem", "100", "--no-wait")
    assert result.returncode == 0, result.stderr
    line = mesh.wait_line("mem_budget_exceeded", 20)
    assert "hog" in line
    wait_until(lambda: any(i["restarts"] >= 1 for i in mesh.app("hog")["instances"]), 15,
               "hog restarted")
    assert cli(mesh.home, "stop", "hog").returncode == 0


@pytest.mark.timeout(120)
def test_stop_drains_every_instance_and_nothing_respawns(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "tester", digests["tester"], "--max", "3").returncode == 0
    mesh.ready("tester", 3)
    result = cli(mesh.home, "stop", "tester")
    assert result.returncode == 0, result.stderr
    assert "stopped tester" in result.stdout
    assert workload_pids(mesh.home) == []
    assert all(a["instances"] == [] for a in mesh.status()["apps"])
    assert cli(mesh.home, "stop", "tester").returncode == 2  # no plan any more
    assert workload_pids(mesh.home) == []


@pytest.mark.timeout(120)
def test_an_instance_that_turns_unhealthy_after_ready_is_restarted(
        home: Path, digests: dict[str, str]) -> None:
    (home / "mycelium.toml").write_text("[instance]\nhealth_interval = 0.1\n"
                                        "health_failures = 3\n")
    mesh = MeshProcess(home)
    try:
        result = cli(home, "deploy", "flaky", digests["flaky"], "--max", "1")
        assert result.returncode == 0, result.stderr
        line = mesh.wait_line("health check failed 3 times", 30)
        assert "flaky" in line
        wait_until(lambda: any(i["restarts"] >= 1 for i in mesh.app("flaky")["instances"]), 30,
                   "flaky restarted")
    finally:
        assert mesh.stop() == 0
    assert workload_pids(home) == []


@pytest.mark.timeout(120)
def test_node_capacity_limits_desired_and_freed_capacity_places_the_waiting_app(
        home: Path, digests: dict[str, str]) -> None:
    (home / "mycelium.toml").write_text("[node]\ncpu = 0.25\nmem_mb = 1024\n")
    mesh = MeshProcess(home)
    try:
        assert cli(home, "deploy", "tester", digests["tester"], "--max", "3",
                   "--cpu", "0.2").returncode == 0
        mesh.ready("tester", 3)
        result = cli(home, "deploy", "hello", digests["hello"], "--max", "3", "--cpu", "0.2",
                     "--no-wait")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: mesh.app("hello")["desired"] == 0, 15, "hello declined everywhere")
        assert mesh.app("hello")["instances"] == []
        assert cli(home, "stop", "tester").returncode == 0
        mesh.ready("hello", 3)
        assert mesh.app("hello")["desired"] == 3
    finally:
        assert mesh.stop() == 0
    assert workload_pids(home) == []
