"""Real cgroup v2 containment (skipped where no cgroup v2 is writable): a workload joins its
cgroup before it execs, nothing it starts can leave it, a stop or the next mesh's reap kills
them all, and no cgroup directory is left behind."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mycelium.node.cgroups import CgroupError, CgroupTree, InstanceCgroup
from mycelium.node.containment import Confinement, Jail, TagJail, UidJail
from mycelium.node.launch import exit_reason, spawn_retrying
from mycelium.node.process import ProcessError, Workload

#: The issue's escaper: a new session, and a double-forked daemon in / with no descriptors.
ESCAPER = ("setsid sleep 3604 & "
           "( cd / && exec setsid sleep 3605 </dev/null >/dev/null 2>&1 & ) & "
           "exec sleep 3606")
#: A uid no process of this machine has (outside the mesh's dynamic range).
STRANGER = 0x7FFEFFF0


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(delay)  # polling a condition with a deadline, not a fixed wait
        delay = min(delay * 2, 0.05)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[CgroupTree]:
    """This test's home's cgroup; at the end nothing of it may be left, process or directory."""
    found = CgroupTree.detect(tmp_path / "home")
    if found is None:
        pytest.skip("no writable cgroup v2 on this machine")
    try:
        yield found
    finally:
        leftover = found.reap()
        found.remove()
        assert not found.path.exists(), f"cgroup left behind: {list(found.path.iterdir())}"
        assert leftover == [], f"processes survived the test in its cgroup: {leftover}"


@pytest.fixture
def start(tmp_path: Path, tree: CgroupTree) -> Iterator[Callable[..., Workload]]:
    """``start(script, jail=…, prefix=…)``: ``sh -c script`` in a cgroup of ``tree``."""
    started: list[Workload] = []

    def run(script: str, jail: Jail | None = None, prefix: tuple[str, ...] = (),
            name: str = "app@node-1#1") -> Workload:
        directory = tmp_path / name
        (directory / "app").mkdir(parents=True, exist_ok=True)
        os.chmod(tmp_path, 0o755)
        os.chmod(directory, 0o755)
        os.chmod(directory / "app", 0o777)
        confine = Confinement(prefix=prefix, umask=0o077,
                              jail=jail or TagJail(os.geteuid(), str(directory / "home")))
        workload = spawn_retrying(["/bin/sh", "-c", script], directory,
                                  {"PATH": "/usr/bin:/bin", "HOME": str(directory / "home")},
                                  (directory / "out.log", directory / "err.log"), confine, tree,
                                  (64, 0.5))
        started.append(workload)
        return workload

    yield run
    for workload in started:
        workload.terminate(grace=0.2)


def cmdline(pid: int) -> tuple[str, ...]:
    try:
        return tuple(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ()


def escaped(workload: Workload) -> list[int]:
    """The escaper's three sleeps, once all are in its cgroup (its main one first)."""
    jail = workload.jail
    assert isinstance(jail, InstanceCgroup)
    want = {("sleep", "3604"), ("sleep", "3605"), ("sleep", "3606")}
    procs = wait_for(lambda: (lambda found: found if set(found) == want else None)(
        {cmdline(p): p for p in jail.procs()}), 15.0, "the escaper's sleeps in its cgroup")
    daemon = psutil.Process(procs[("sleep", "3605")])
    assert daemon.cwd() == "/" and daemon.ppid() != workload.pid
    assert procs[("sleep", "3606")] == workload.pid  # the same pid, exec'd past the shells
    assert all(os.getsid(p) != workload.pid for p in procs.values() if p != workload.pid)
    return [workload.pid, *[p for p in procs.values() if p != workload.pid]]


def test_everything_a_workload_starts_is_in_its_cgroup_however_it_left(
        start: Callable[..., Workload], tree: CgroupTree) -> None:
    workload = start(ESCAPER)
    escaped(workload)
    assert isinstance(workload.jail, InstanceCgroup)
    assert workload.jail.path == tree.path / "app@node-1#1" and workload.jail.populated()
    assert workload.env.get("PWD") is None  # the joining shell leaves no trace in its env


def test_a_stop_kills_all_of_them_and_removes_the_cgroup(
        start: Callable[..., Workload], tree: CgroupTree) -> None:
    workload = start(ESCAPER)
    pids = escaped(workload)
    assert isinstance(workload.jail, InstanceCgroup)
    workload.terminate(grace=0.5)
    assert [p for p in pids if alive(p)] == []
    assert not workload.jail.path.exists()
    assert exit_reason(workload, workload.returncode or 0).startswith("killed by SIG")


def test_the_next_mesh_kills_what_a_dead_mesh_left_in_the_home_s_cgroup(
        start: Callable[..., Workload], tree: CgroupTree, tmp_path: Path) -> None:
    pids = escaped(start(ESCAPER, name="a@node-1#1")) + escaped(start(ESCAPER, name="b@node-1#2"))
    again = CgroupTree.detect(tmp_path / "home")  # what the next `up` on this home finds
    assert again is not None and again.path == tree.path
    assert sorted(again.reap()) == sorted(pids)
    assert [p for p in pids if alive(p)] == [] and again.leftovers() == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="switching to another uid needs root and setpriv")
def test_a_workload_with_a_uid_of_its_own_cannot_write_its_way_out(
        start: Callable[..., Workload], tree: CgroupTree, tmp_path: Path) -> None:
    escape = " ; ".join(f'(echo $$ > "{target}/cgroup.procs") 2>/dev/null && echo left '
                        f'|| echo stayed' for target in (tree.path, tree.path.parent))
    workload = start(f"{escape}; exec sleep 3606", UidJail(STRANGER),
                     ("setpriv", f"--reuid={STRANGER}", f"--regid={STRANGER}", "--clear-groups",
                      "--no-new-privs", "--"))
    jail = workload.jail
    assert isinstance(jail, InstanceCgroup) and jail.also is None  # the cgroup alone
    log = tmp_path / "app@node-1#1" / "out.log"
    wait_for(lambda: log.read_text().count("stayed") == 2, 15.0, "both escapes refused")
    assert "left" not in log.read_text() and jail.procs() == [workload.pid]
    assert psutil.Process(workload.pid).uids().real == STRANGER


def test_a_spawn_that_fails_leaves_no_cgroup(tree: CgroupTree, tmp_path: Path) -> None:
    directory = tmp_path / "bad@node-1#1"
    (directory / "app").mkdir(parents=True)
    with pytest.raises(ProcessError):
        spawn_retrying(["./missing"], directory, {"PATH": "/bin"},
                       (directory / "o", directory / "e"),
                       Confinement(umask=0o077, jail=TagJail(os.geteuid(), "/nowhere")), tree)
    assert tree.leftovers() == []


def test_off_is_no_cgroup_and_a_path_that_is_no_cgroup_is_refused(tmp_path: Path) -> None:
    assert CgroupTree.detect(tmp_path / "home", "off") is None
    for bad in ("relative/dir", str(tmp_path)):
        with pytest.raises(CgroupError, match=r"node\.cgroup"):
            CgroupTree.detect(tmp_path / "home", bad)
