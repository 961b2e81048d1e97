"""A real root mesh on a machine with a writable cgroup v2: each instance has a cgroup, nothing
its workload starts leaves it (the issue's escaper), stop, down and the next up after a kill -9
empty and remove it, and `status` says how instances are contained and limited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from isokit import deploy, escapees, needs_root
from mesh_helpers import MeshProcess, cli, wait_until

from mycelium.node.cgroups import locate, mounts, own_cgroup, tree_name
from tests.meshkit import stopped_cleanly


def _base() -> Path | None:
    with open("/proc/self/mountinfo") as fh, open("/proc/self/cgroup") as gh:
        return locate(mounts(fh.read()), own_cgroup(gh.read()))


BASE = _base()
pytestmark = [needs_root, pytest.mark.skipif(BASE is None, reason="no writable cgroup v2")]


def tree_of(home: Path) -> Path:
    assert BASE is not None
    return BASE / tree_name(home.absolute())


def cgroup_of(home: Path, inst: dict[str, Any]) -> Path:
    """The instance's cgroup: named after its directory, in its home's tree."""
    return tree_of(home) / Path(inst["dir"]).parent.name


def procs(cgroup: Path) -> set[int]:
    try:
        return {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}
    except OSError:
        return set()


def escaped(mesh: MeshProcess, home: Path) -> tuple[dict[str, Any], list[psutil.Process]]:
    """The escaper's instance and its two sleeps, once both run (in its cgroup)."""
    inst = mesh.ready("escaper", 1)[0]
    found = wait_until(lambda: (lambda f: f if len(f) == 2 else None)(escapees(inst)), 15.0,
                       "the escaper's two sleeps")
    return inst, found


def assert_gone(found: list[psutil.Process]) -> None:
    def gone() -> bool:
        return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in found)
    wait_until(gone, 15.0, f"escaped processes {[p.pid for p in found]} to die")


@pytest.fixture
def one_node(home: Path) -> Iterator[MeshProcess]:
    mesh = MeshProcess(home, nodes=1)
    with stopped_cleanly(mesh, home):
        yield mesh
    assert not tree_of(home).exists(), "down left the home's cgroup behind"


def test_every_process_of_an_instance_is_in_its_cgroup_and_a_stop_removes_it(
        one_node: MeshProcess, home: Path, digests: dict[str, str]) -> None:
    deploy(home, "escaper", digests["escaper"])
    inst, found = escaped(one_node, home)
    cgroup = cgroup_of(home, inst)
    assert {inst["pid"], *(p.pid for p in found)} <= procs(cgroup)
    iso = one_node.status()["isolation"]
    limits = "cgroup" if "memory" in (tree_of(home) / "cgroup.subtree_control").read_text() \
        else "sampled"
    assert iso["containment"] == "cgroup" and iso["limits"] == limits == inst["limits"]
    assert f"limits: {limits}," in (shown := cli(home, "status").stdout)
    assert "containment: cgroup" in shown
    assert cli(home, "stop", "escaper").returncode == 0
    assert_gone(found)
    wait_until(lambda: not cgroup.exists(), 15.0, "the stopped instance's cgroup to go")


def test_a_blue_green_update_empties_and_removes_blue_s_cgroup(
        one_node: MeshProcess, home: Path, digests: dict[str, str]) -> None:
    deploy(home, "escaper", digests["escaper"])
    blue, found = escaped(one_node, home)
    deploy(home, "escaper", digests["escaper-v2"])
    assert_gone(found)
    wait_until(lambda: not cgroup_of(home, blue).exists(), 15.0, "blue's cgroup to go")
    green = one_node.ready("escaper", 1, digests["escaper-v2"])[0]
    assert green["pid"] in procs(cgroup_of(home, green))


def test_a_crash_empties_the_crashed_instance_s_cgroup_before_it_goes(
        one_node: MeshProcess, home: Path, digests: dict[str, str]) -> None:
    deploy(home, "escaper", digests["escaper"])
    inst, found = escaped(one_node, home)
    assert cli(home, "kill", "escaper").returncode == 0
    assert_gone(found)
    wait_until(lambda: not cgroup_of(home, inst).exists(), 15.0, "the crashed one's cgroup")
    wait_until(lambda: one_node.ready("escaper", 1)[0]["id"] != inst["id"], 30.0,
               "a replacement")


def test_the_next_up_after_a_kill_9_empties_and_removes_the_dead_mesh_s_cgroups(
        home: Path, digests: dict[str, str]) -> None:
    mesh = MeshProcess(home, nodes=1)
    try:
        deploy(home, "escaper", digests["escaper"])
        inst, found = escaped(mesh, home)
    finally:
        mesh.kill9()
    main = psutil.Process(inst["pid"])
    left = cgroup_of(home, inst)
    assert {main.pid, *(p.pid for p in found)} <= procs(left)  # they outlived the mesh
    again = MeshProcess(home, nodes=1)
    with stopped_cleanly(again, home):
        assert_gone([main, *found])
        # emptied, then removed (at once, or at the edge takeover when workers were adopted)
        wait_until(lambda: not left.exists(), 15.0, "the dead mesh's cgroup removed")
        again.ready("escaper", 1)
    assert not tree_of(home).exists()


def test_cgroup_off_keeps_the_uid_containment(home: Path, digests: dict[str, str]) -> None:
    config = home / "mycelium.toml"
    config.write_text(config.read_text() + '[node]\ncgroup = "off"\n')
    mesh = MeshProcess(home, nodes=1)
    with stopped_cleanly(mesh, home):
        deploy(home, "escaper", digests["escaper"])
        inst, found = escaped(mesh, home)
        assert mesh.status()["isolation"]["containment"] == "uid"
        assert not tree_of(home).exists()
        assert cli(home, "stop", "escaper").returncode == 0
        assert_gone(found)
        assert inst["limits"] == "sampled"


def test_a_configured_cgroup_that_is_none_is_refused(home: Path) -> None:
    config = home / "mycelium.toml"
    config.write_text(config.read_text() + f'[node]\ncgroup = "{home / "nowhere"}"\n')
    done = cli(home, "up", "--nodes", "1", "--edge-port", "0")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: config: node.cgroup:"), done.stderr
    assert not tree_of(home).exists()


def test_a_configured_delegated_cgroup_holds_the_home_s_cgroup(
        home: Path, digests: dict[str, str]) -> None:
    assert BASE is not None
    delegated = BASE / f"delegated-{tree_name(home.absolute())[9:]}"
    delegated.mkdir()
    try:
        config = home / "mycelium.toml"
        config.write_text(config.read_text() + f'[node]\ncgroup = "{delegated}"\n')
        mesh = MeshProcess(home, nodes=1)
        with stopped_cleanly(mesh, home):
            deploy(home, "escaper", digests["escaper"])
            inst, found = escaped(mesh, home)
            mine = delegated / tree_name(home.absolute()) / Path(inst["dir"]).parent.name
            assert {inst["pid"], *(p.pid for p in found)} <= procs(mine)
        assert_gone(found)
        assert list(p for p in delegated.iterdir() if p.is_dir()) == []
    finally:
        delegated.rmdir()
