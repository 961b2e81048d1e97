"""The limits' side that runs without the kernel's controllers: which files an instance's cgroup
gets, and how an OOM kill reads. The machines of this project offer no memory/cpu/pids
controller to cgroup v2, so a plain directory stands in for a cgroup that offers all three:
what is checked is what the mesh writes and reads, not what the kernel then enforces."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from mycelium.node.cgroups import CPU_PERIOD, PIDS_MAX, CgroupTree, InstanceCgroup
from mycelium.node.containment import Confinement
from mycelium.node.launch import exit_reason
from mycelium.node.process import spawn

EVERY = frozenset({"memory", "cpu", "pids"})


def stand_in(tmp_path: Path, controllers: frozenset[str] = EVERY) -> CgroupTree:
    tree = tmp_path / "mycelium-0123456789abcdef"
    tree.mkdir()
    return CgroupTree(path=tree, controllers=controllers, sh=shutil.which("sh") or "/bin/sh")


def test_an_instance_s_cgroup_gets_its_budget_as_limits(tmp_path: Path) -> None:
    tree = stand_in(tmp_path)
    assert tree.limits
    group = tree.instance("app@node-1#1", 128, 0.25)
    written = {f.name: f.read_text() for f in group.path.iterdir()}
    assert written == {"memory.oom.group": "1", "memory.max": str(128 << 20),
                       "cpu.max": f"25000 {CPU_PERIOD}", "pids.max": str(PIDS_MAX)}
    assert group.mem_mb == 128  # memory.swap.max skipped: swap is not accounted here


def test_swap_is_kept_out_of_the_budget_where_it_is_accounted(tmp_path: Path) -> None:
    tree = stand_in(tmp_path)
    (tree.path / "app@node-1#1").mkdir()
    (tree.path / "app@node-1#1" / "memory.swap.max").write_text("max")
    group = tree.instance("app@node-1#1", 64)
    assert (group.path / "memory.swap.max").read_text() == "0"


def test_a_tree_without_the_memory_controller_writes_no_memory_limit(tmp_path: Path) -> None:
    tree = stand_in(tmp_path, frozenset({"pids"}))
    group = tree.instance("app@node-1#1", 128, 1.0)
    assert not tree.limits and group.mem_mb is None
    assert sorted(f.name for f in group.path.iterdir()) == ["pids.max"]


def test_an_oom_kill_at_memory_max_is_reported_as_mem_budget_exceeded(tmp_path: Path) -> None:
    group = stand_in(tmp_path).instance("app@node-1#1", 64)
    (group.path / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 0\n")
    workload = spawn(["sleep", "60"], tmp_path, {}, tmp_path / "out.log",
                     confine=Confinement(umask=0o077, jail=group))
    assert isinstance(workload.jail, InstanceCgroup)
    os.kill(workload.pid, signal.SIGKILL)
    returncode = workload.wait(10)
    assert returncode == -signal.SIGKILL
    assert exit_reason(workload, returncode) == "killed by SIGKILL"  # no OOM kill counted
    (group.path / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n")
    assert exit_reason(workload, returncode) == (
        "mem_budget_exceeded: killed by the kernel at memory.max 64 MB (killed by SIGKILL)")
