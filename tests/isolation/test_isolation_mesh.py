"""A real mesh as root: workloads get a built environment, a uid of their own per instance, no
privileges, private directories, and nothing they start outlives their instance."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from isokit import MeshWithEnv, deploy, escapees, get, needs_root, post
from mesh_helpers import MeshProcess, cli, wait_until

from mycelium.node.isolation import fallback_instances_dir
from mycelium.node.uids import RANGE_FIRST, RANGE_LAST
from tests.meshkit import private_home, stopped_cleanly

pytestmark = needs_root

MARKER = "ISO_OPERATOR_MARKER"


def ready_one(mesh: MeshProcess, app: str, digest: str | None = None) -> dict[str, Any]:
    return mesh.ready(app, 1, digest)[0]


def test_the_environment_is_built_and_nothing_of_the_operators_reaches_the_workload(
        home: Path, digests: dict[str, str]) -> None:
    mesh = MeshWithEnv(home, {MARKER: "leaked", "LANG": "C.UTF-8"})
    with stopped_cleanly(mesh, home):
        deploy(home, "probe", digests["probe"])
        inst = ready_one(mesh, "probe")
        env = get(mesh, "probe", "/env")
        root = Path(inst["dir"]).parent
        assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                       "HOME": str(root / "home"), "TMPDIR": str(root / "tmp"),
                       "PORT": inst["url"].rsplit(":", 1)[1], "MYCELIUM_APP": "probe",
                       "MYCELIUM_NODE": "node-1", "MYCELIUM_DIGEST": digests["probe"],
                       "MYCELIUM_INSTANCE": inst["id"], "FROM_MANIFEST": "yes"}
        assert not any(MARKER in v for v in env.values())


def test_a_workload_runs_as_its_own_uid_without_privileges(
        mesh: MeshProcess, home: Path, digests: dict[str, str]) -> None:
    deploy(home, "probe", digests["probe"])
    deploy(home, "other", digests["other"])
    inst, other = ready_one(mesh, "probe"), ready_one(mesh, "other")
    me = get(mesh, "probe", "/id")
    uid = inst["uid"]
    assert RANGE_FIRST <= uid <= RANGE_LAST and uid != other["uid"]
    assert me["uid"] == me["euid"] == me["gid"] == uid and me["groups"] == []
    assert me["no_new_privs"] == "1" and me["core"] == [0, 0] and me["umask"] == 0o077
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert me["nofile"] == [min(65536, hard)] * 2
    assert inst["limits"] == "sampled"
    work = Path(inst["dir"])
    assert me["cwd"] == str(work)
    for part in (work, work.parent / "home", work.parent / "tmp"):
        st = part.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, uid, 0o700)
    # tmp_path is 0700: the uid cannot reach <home>/instances, so they live outside the home
    assert work.parent.parent == fallback_instances_dir(home.absolute())
    iso = mesh.status()["isolation"]
    assert iso["run_as"] == "dynamic" and iso["limits"] == "sampled"
    assert iso["instances_dir"] == str(work.parent.parent) and uid in range(*iso["uids"])
    shown = cli(home, "status").stdout
    assert f"uid {uid}" in shown and f"limits: sampled, instances in {work.parent.parent}" in shown


def test_the_homes_private_parts_and_other_instances_are_unreadable_to_a_workload(
        mesh: MeshProcess, home: Path, digests: dict[str, str]) -> None:
    deploy(home, "probe", digests["probe"])
    deploy(home, "other", digests["other"])
    other = Path(ready_one(mesh, "other")["dir"])
    ready_one(mesh, "probe")
    key = next((home / "keys").glob("*.key"))
    targets = [str(p) for p in (home, home / "keys", key, home / "state", home / "repo",
                                next((home / "repo").glob("*.spore")), home / "control.sock",
                                home / "mesh.lock", home / "logs", other, other / "binary",
                                other.parent / "home", other.parent / "tmp",
                                home / "instances" / other.parent.name / "process.json",
                                home / "instances" / other.parent.name / "output")]
    answers = post(mesh, "probe", "/try", targets)
    assert {path: answers[path] for path in targets} == {path: "EACCES" for path in targets}
    mine = Path(ready_one(mesh, "probe")["dir"])
    assert post(mesh, "probe", "/try", [str(mine), str(mine / "binary")]) == {
        str(mine): "ok", str(mine / "binary"): "ok"}


def assert_gone(procs: list[psutil.Process]) -> None:
    def gone() -> bool:
        return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
    wait_until(gone, 15.0, f"escaped processes {[p.pid for p in procs]} to die")


def escaped(mesh: MeshProcess, digest: str | None = None) -> tuple[dict[str, Any],
                                                                     list[psutil.Process]]:
    inst = ready_one(mesh, "escaper", digest)
    procs = wait_until(lambda: (lambda f: f if len(f) == 2 else None)(escapees(inst)), 15.0,
                       "the escaper's two sleeps")
    assert {tuple(p.cmdline()) for p in procs} == {("sleep", "3604"), ("sleep", "3605")}
    daemon = next(p for p in procs if p.cmdline() == ["sleep", "3605"])
    assert daemon.cwd() == "/" and daemon.ppid() != inst["pid"]
    assert all(os.getsid(p.pid) != inst["pid"] and os.getpgid(p.pid) != inst["pid"]
               for p in procs)  # neither session nor group reaches them
    return inst, procs


def test_stop_kills_what_the_workload_started_however_it_left(
        mesh: MeshProcess, home: Path, digests: dict[str, str]) -> None:
    deploy(home, "escaper", digests["escaper"])
    _inst, procs = escaped(mesh)
    assert cli(home, "stop", "escaper").returncode == 0
    assert_gone(procs)


def test_a_blue_green_update_kills_what_blue_started(
        mesh: MeshProcess, home: Path, digests: dict[str, str]) -> None:
    deploy(home, "escaper", digests["escaper"])
    _blue, procs = escaped(mesh)
    deploy(home, "escaper", digests["escaper-v2"])
    assert_gone(procs)
    escaped(mesh, digests["escaper-v2"])  # green's own are untouched


def test_a_crash_kills_what_the_crashed_instance_started(
        mesh: MeshProcess, home: Path, digests: dict[str, str]) -> None:
    deploy(home, "escaper", digests["escaper"])
    inst, procs = escaped(mesh)
    assert cli(home, "kill", "escaper").returncode == 0
    assert_gone(procs)
    wait_until(lambda: ready_one(mesh, "escaper")["id"] != inst["id"], 30.0, "a replacement")


def test_down_kills_what_the_workloads_started(home: Path, digests: dict[str, str]) -> None:
    mesh = MeshProcess(home, nodes=1)
    with stopped_cleanly(mesh, home):
        deploy(home, "escaper", digests["escaper"])
        _inst, procs = escaped(mesh)
    assert_gone(procs)


def test_the_next_up_after_a_kill_9_of_the_mesh_kills_every_leftover(
        home: Path, digests: dict[str, str]) -> None:
    mesh = MeshProcess(home, nodes=1)
    try:
        deploy(home, "escaper", digests["escaper"])
        inst, procs = escaped(mesh)
    finally:
        mesh.kill9()
    main = psutil.Process(inst["pid"])
    assert main.is_running() and all(p.is_running() for p in procs)  # they outlived it
    again = MeshProcess(home, nodes=1)
    with stopped_cleanly(again, home):
        assert_gone([main, *procs])
        ready_one(again, "escaper")  # the plan came back by itself


@pytest.fixture
def open_home(spores: tuple[Path, dict[str, str]]) -> Iterator[Path]:
    """A home whose parents every uid may search (so its instances stay inside it)."""
    parent = Path(tempfile.mkdtemp(prefix="mycelium-iso-", dir="/tmp"))
    os.chmod(parent, 0o711)
    try:
        yield from private_home(spores[0], parent / "home")
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_instances_inside_a_reachable_home_leave_its_private_parts_unreadable(
        open_home: Path, digests: dict[str, str]) -> None:
    home = open_home
    mesh = MeshProcess(home, nodes=1)
    with stopped_cleanly(mesh, home):
        deploy(home, "probe", digests["probe"])
        deploy(home, "other", digests["other"])
        other = Path(ready_one(mesh, "other")["dir"])
        mine = Path(ready_one(mesh, "probe")["dir"])
        assert mine.parent.parent == home / "instances" == other.parent.parent
        assert stat.S_IMODE(home.stat().st_mode) == 0o711
        targets = [str(p) for p in (home, home / "keys", home / "state", home / "repo",
                                    home / "logs", home / "trusted", home / "control.sock",
                                    home / "mesh.lock", home / "mycelium.toml",
                                    home / "instances", other, other.parent / "home",
                                    mine.parent / "process.json", mine.parent / "output",
                                    other.parent / "process.json", other.parent / "output")]
        answers = post(mesh, "probe", "/try", targets)
        assert answers == {path: "EACCES" for path in targets}
        assert post(mesh, "probe", "/try", [str(mine / "binary")]) == {str(mine / "binary"): "ok"}
