"""Health checks on a real mesh: readiness takes an instance out of the edge's routes and
brings it back without restarting it, liveness restarts it with its reason, exec and tcp checks
run for real, and sd_notify workloads get Ready, show their STATUS= and are watched."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from mesh_helpers import MeshProcess, cli, wait_until


def workdir(home: Path, instance: dict[str, Any]) -> Path:
    """Where the instance's workload runs (its files tell the checker what to fail)."""
    if instance.get("dir"):  # isolated: outside the home when its uid cannot reach it
        return Path(instance["dir"])
    return home / "instances" / str(instance["id"]).replace("/", "_") / "app"


def get(mesh: MeshProcess, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{mesh.url}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def instance(mesh: MeshProcess, app: str, iid: str) -> dict[str, Any] | None:
    return next((i for i in mesh.app(app)["instances"] if i["id"] == iid), None)


def log_reasons(home: Path, app: str) -> list[str]:
    out = cli(home, "logs", "--app", app, "--json").stdout
    return [str(r.get("reason")) for r in map(orjson.loads, out.splitlines())]


def unready(mesh: MeshProcess, app: str, iid: str) -> dict[str, Any] | None:
    """The instance once it is out of the routes (still running), else None."""
    i = instance(mesh, app, iid)
    return i if i is not None and not i["serving"] else None


def replacement(mesh: MeshProcess, app: str, pid: int) -> dict[str, Any] | None:
    """The app's Ready instance once it is another process than ``pid``, else None."""
    insts = [i for i in mesh.app(app)["instances"] if i["state"] == "Ready"]
    return insts[0] if insts and insts[0]["pid"] != pid else None


@pytest.mark.timeout(120)
def test_a_failing_readiness_check_takes_the_instance_out_of_the_routes_without_a_restart(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "ready", digests["ready"], "--min", "2", "--max", "2"
               ).returncode == 0
    first, second = mesh.ready("ready", 2)
    assert first["serving"] and second["serving"]
    (workdir(mesh.home, first) / "unready").touch()

    out = wait_until(lambda: unready(mesh, "ready", first["id"]), 10,
                     "the instance out of the routes")
    assert out["state"] == "Ready" and out["pid"] == first["pid"] and out["restarts"] == 0
    assert out["last_check"]["check"] == "http-readiness"
    assert out["last_check"]["ok"] is False and out["last_check"]["detail"] == "HTTP 503"
    assert out["last_check"]["at"].endswith("Z")
    for _ in range(6):  # every request goes to the instance that still serves
        status, body = get(mesh, "/ready/")
        assert status == 200 and orjson.loads(body)["instance"] == second["id"]

    (workdir(mesh.home, second) / "unready").touch()
    wait_until(lambda: get(mesh, "/ready/")[0] == 503, 10, "503 once no instance serves")
    assert [i["state"] for i in mesh.app("ready")["instances"]] == ["Ready", "Ready"]

    for inst in (first, second):
        (workdir(mesh.home, inst) / "unready").unlink()
    wait_until(lambda: all(i["serving"] for i in mesh.app("ready")["instances"]), 10,
               "both back in the routes")
    assert get(mesh, "/ready/")[0] == 200
    assert {i["pid"] for i in mesh.app("ready")["instances"]} == {first["pid"], second["pid"]}


@pytest.mark.timeout(120)
def test_failing_liveness_restarts_the_instance_with_the_check_and_its_detail(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "live", digests["live"]).returncode == 0
    (before,) = mesh.ready("live", 1)
    (workdir(mesh.home, before) / "dead").touch()

    after = wait_until(lambda: replacement(mesh, "live", before["pid"]), 20, "a replacement")
    assert after["restarts"] == 1
    assert "liveness_failed: alive: HTTP 500" in log_reasons(mesh.home, "live")


@pytest.mark.timeout(120)
def test_exec_readiness_and_tcp_liveness_checks(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "exec", digests["exec"]).returncode == 0
    (inst,) = mesh.ready("exec", 1)
    (workdir(mesh.home, inst) / "unready").touch()

    out = wait_until(lambda: unready(mesh, "exec", inst["id"]), 10, "out of the routes")
    assert out["last_check"]["check"] == "file"
    assert out["last_check"]["detail"] == "exit code 3: not yet"
    assert get(mesh, "/exec/")[0] == 503
    (workdir(mesh.home, inst) / "unready").unlink()
    wait_until(lambda: get(mesh, "/exec/")[0] == 200, 10, "back in the routes")
    assert instance(mesh, "exec", inst["id"])["restarts"] == 0  # type: ignore[index]


@pytest.mark.timeout(120)
def test_notify_ready_status_text_and_the_watchdog(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "notify", digests["notify"]).returncode == 0
    (inst,) = mesh.ready("notify", 1)
    wait_until(lambda: (instance(mesh, "notify", inst["id"]) or {}).get("status_text")
               == "serving", 10, "STATUS=serving in status")
    environ = Path(f"/proc/{inst['pid']}/environ").read_bytes().split(b"\0")
    assert b"WATCHDOG_USEC=1000000" in environ
    socket_var = next(v for v in environ if v.startswith(b"NOTIFY_SOCKET="))
    socket_path = os.fsdecode(socket_var.split(b"=", 1)[1])
    if not socket_path.startswith("@"):
        assert Path(socket_path).parent == workdir(mesh.home, inst).parent
    assert get(mesh, "/notify/")[0] == 200

    (workdir(mesh.home, inst) / "hang").touch()  # no more WATCHDOG=1

    after = wait_until(lambda: replacement(mesh, "notify", inst["pid"]), 20,
                       "a replacement after the watchdog")
    assert after["restarts"] == 1
    assert "watchdog_timeout" in log_reasons(mesh.home, "notify")


@pytest.mark.timeout(120)
def test_a_notify_flood_from_one_workload_delays_no_other(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "flood", digests["flood"]).returncode == 0
    (flood,) = mesh.ready("flood", 1)
    wait_until(lambda: str((instance(mesh, "flood", flood["id"]) or {}).get("status_text"))
               .startswith("flood"), 10, "the flood's STATUS= in status")
    assert cli(mesh.home, "deploy", "notify", digests["notify"]).returncode == 0
    mesh.ready("notify", 1)
    assert get(mesh, "/notify/")[0] == 200
    assert get(mesh, "/flood/")[0] == 200


@pytest.mark.timeout(120)
def test_status_text_shows_while_launching_and_only_the_workload_can_say_ready(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "slowready", digests["slowready"], "--no-wait"
               ).returncode == 0

    def launching() -> dict[str, Any] | None:
        insts = mesh.app("slowready")["instances"]
        return insts[0] if insts and insts[0]["status_text"] == "starting" else None

    inst = wait_until(launching, 20, "STATUS=starting while Launching")
    assert inst["state"] == "Launching" and inst["serving"] is False
    environ = Path(f"/proc/{inst['pid']}/environ").read_bytes().split(b"\0")
    address = os.fsdecode(next(v for v in environ if v.startswith(b"NOTIFY_SOCKET="))[14:])
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as intruder:
        intruder.sendto(b"READY=1\nSTATUS=intruder", address)
    (workdir(mesh.home, inst) / "say.tmp").write_text("STATUS=genuine")
    (workdir(mesh.home, inst) / "say.tmp").rename(workdir(mesh.home, inst) / "say")

    def genuine() -> dict[str, Any] | None:  # said after the intruder, on the same socket
        i = instance(mesh, "slowready", inst["id"])
        return i if i is not None and i["status_text"] == "genuine" else None

    again = wait_until(genuine, 10, "the workload's own STATUS=")
    assert again["state"] == "Launching"  # the intruder's READY=1 was not heard
    assert cli(mesh.home, "stop", "slowready").returncode == 0
