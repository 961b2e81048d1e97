"""Flow D (blue/green, rollback) and the mesh's own lifecycle: graceful down, restore of every
plan on the next up, and recovery after a kill -9 of the mesh (no orphans, no duplicates)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import orjson
import pytest
from mesh_helpers import MeshProcess, cli, wait_until, workload_pids


def version(mesh: MeshProcess) -> str:
    with urllib.request.urlopen(f"{mesh.url}/hello/", timeout=5) as resp:
        return str(orjson.loads(resp.read())["version"])


@pytest.mark.timeout(150)
def test_blue_green_update_then_a_failed_update_rolls_back(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "hello", digests["hello"], "--max", "3").returncode == 0
    mesh.ready("hello", 3)
    assert version(mesh) == "1.0.0"

    result = cli(mesh.home, "deploy", "hello", digests["hello-v2"], "--max", "3",
                 "--warmup", "0.2")
    assert result.returncode == 0, result.stderr
    green = mesh.ready("hello", 3, digests["hello-v2"])
    assert all(i["digest"] == digests["hello-v2"] for i in mesh.app("hello")["instances"])
    assert {version(mesh) for _ in range(6)} == {"2.0.0"}

    result = cli(mesh.home, "deploy", "hello", digests["hello-bad"], "--max", "3",
                 "--timeout", "2")
    assert result.returncode == 1
    assert "rolled back" in result.stderr
    doc = mesh.app("hello")
    assert doc["digest"] == digests["hello-v2"] and doc["state"] == "failed"
    wait_until(lambda: all(i["digest"] == digests["hello-v2"]
                           for i in mesh.app("hello")["instances"]), 15, "green stopped")
    assert sorted(i["pid"] for i in mesh.ready("hello", 3)) == sorted(i["pid"] for i in green)
    assert {version(mesh) for _ in range(6)} == {"2.0.0"}


@pytest.mark.timeout(150)
def test_down_then_up_restores_plans_and_kill9_of_the_mesh_leaves_no_orphans(
        home: Path, digests: dict[str, str]) -> None:
    mesh = MeshProcess(home)
    try:
        assert cli(home, "deploy", "hello", digests["hello"], "--max", "3").returncode == 0
        mesh.ready("hello", 3)
        result = cli(home, "down")
        assert result.returncode == 0, result.stderr
        assert mesh.proc.wait(30) == 0
        assert workload_pids(home) == []

        mesh = MeshProcess(home)  # graceful down → up: the plan comes back by itself
        first = sorted(i["pid"] for i in mesh.ready("hello", 3))
        mesh.kill9()
        assert sorted(workload_pids(home)) == first  # the workloads outlived the mesh

        mesh = MeshProcess(home)  # crash → up: leftovers reaped, plan restored, no duplicates
        mesh.wait_line("reaped 3 workload(s)")
        again = sorted(i["pid"] for i in mesh.ready("hello", 3))
        assert not set(again) & set(first)
        assert sorted(workload_pids(home)) == again
        assert mesh.app("hello")["digest"] == digests["hello"]
    finally:
        assert mesh.stop() == 0
    assert workload_pids(home) == []
