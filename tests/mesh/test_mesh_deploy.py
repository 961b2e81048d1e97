"""Flow B and C end to end: a real `mycelium up`, deploys through the CLI, requests through the
edge, bad input refused with exit 2 and nothing changed."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest
from mesh_helpers import ENV, MeshProcess, cli

from mycelium.priority import DEFAULT_CONTROL_NICE, plan, read_facts
from tests.meshkit import edge_worker_pids


def nice_of(pid: int, tid: int | str | None = None) -> int | None:
    """The nice of a process (or of one of its threads) from /proc: field 19 of its stat;
    None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/task/{tid or pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[16])


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, dict(resp.headers), resp.read()


@pytest.mark.timeout(90)
def test_commands_without_a_running_mesh_exit_1_and_say_how_to_start_one(home: Path) -> None:
    for args in (("status",), ("deploy", "hello", "ab" * 32), ("down",), ("kill", "hello")):
        result = cli(home, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith(f"error: no mesh running at {home}"), result.stderr
        assert "mycelium up --home" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.timeout(120)
def test_deploy_on_three_nodes_serves_round_robin_through_the_edge(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    result = cli(mesh.home, "deploy", "hello", digests["hello"], "--max", "3")
    assert result.returncode == 0, result.stderr
    assert "deployed hello" in result.stdout
    ready = mesh.ready("hello", 3)
    assert sorted(i["node"] for i in ready) == ["node-1", "node-2", "node-3"]

    # the control plane runs below its data plane: the mesh's threads, not its children
    me = os.getpriority(os.PRIO_PROCESS, 0)
    lowered = plan(DEFAULT_CONTROL_NICE, read_facts()).threads  # same rights as the mesh
    assert {nice_of(mesh.proc.pid, tid) for tid in os.listdir(f"/proc/{mesh.proc.pid}/task")} \
        - {None} == {me if lowered is None else lowered}
    assert {nice_of(i["pid"]) for i in ready} == {me}
    assert {nice_of(pid) for pid in edge_worker_pids(mesh.home)} == {me}

    seen = set()
    for _ in range(6):
        status, headers, body = get(f"{mesh.url}/hello/")
        assert status == 200
        assert headers["X-Mycelium-Edge"].startswith("edge-")
        seen.add(orjson.loads(body)["instance"])
    assert seen == {i["id"] for i in ready}

    doc = orjson.loads(cli(mesh.home, "status", "--json").stdout)
    app = doc["apps"][0]
    assert {k: app[k] for k in ("app", "digest", "min", "max", "desired", "ready", "state")} == {
        "app": "hello", "digest": digests["hello"], "min": 1, "max": 3, "desired": 3,
        "ready": 3, "state": "running"}
    inst = app["instances"][0]
    assert set(inst) >= {"id", "node", "digest", "state", "pid", "url", "restarts"}
    assert [n["state"] for n in doc["nodes"]] == ["up", "up", "up"]

    tree = orjson.loads(cli(mesh.home, "tree", "--json").stdout)
    assert [c["id"] for c in tree["children"]] == ["fabric", "edge", "control", "nodes"]

    second = cli(mesh.home, "up", "--edge-port", "0")
    assert second.returncode == 1
    assert "already running" in second.stderr

    # the REPL attaches through the control socket and leaves the mesh running
    repl = subprocess.run(
        [sys.executable, "-m", "mycelium", "repl", "--home", str(mesh.home)],
        input="print('STATE', status()['apps'][0]['state'])\n"
              "print('INFO', fabric.ask(msg.GetInfo())['plans'])\n",
        capture_output=True, text=True, timeout=60, env=ENV, check=False)
    assert repl.returncode == 0, repl.stderr
    assert "STATE running" in repl.stdout and "INFO 1" in repl.stdout

    # chaos kills Ready workloads and reports that each one recovered
    chaos = cli(mesh.home, "chaos", "--app", "hello", "--interval", "0.3", "--duration", "1",
                "--seed", "1")
    assert chaos.returncode == 0, chaos.stderr
    assert "0 kills" not in chaos.stdout and "recoveries" in chaos.stdout
    mesh.ready("hello", 3)


@pytest.mark.timeout(120)
def test_bad_deploy_input_exits_2_and_changes_nothing(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "hello", digests["hello"], "--max", "2").returncode == 0
    mesh.ready("hello", 2)
    before = mesh.status()
    bad = [
        ("deploy", "hello", digests["hello"], "--min", "3", "--max", "2"),
        ("deploy", "hello", digests["hello"], "--max", "0"),
        ("deploy", "hello", digests["hello"], "--cpu", "-1"),
        ("deploy", "hello", digests["hello"], "--mem", "-5"),
        ("deploy", "hello", "0" * 64),
        ("deploy", "Bad_Name", digests["hello"]),
        ("deploy", "tester", digests["hello"]),  # manifest name is hello: mix-and-match
    ]
    for args in bad:
        result = cli(mesh.home, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, args
    after = mesh.status()
    strip = [{k: v for k, v in a.items() if k != "instances"} for a in before["apps"]]
    assert strip == [{k: v for k, v in a.items() if k != "instances"} for a in after["apps"]]
    assert [i["pid"] for i in before["apps"][0]["instances"]] == \
        [i["pid"] for i in after["apps"][0]["instances"]]
