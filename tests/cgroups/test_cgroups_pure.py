"""The cgroup decisions, without a cgroup: where the home's cgroup goes, which limit files a
budget writes, how the kernel's flat-keyed files read."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mycelium.node.cgroups import (
    CPU_PERIOD,
    PIDS_MAX,
    count,
    cpu_max,
    limit_files,
    locate,
    mounts,
    own_cgroup,
    tree_name,
)

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PURE_V2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
READ_ONLY = "29 23 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n"
ESCAPED = "29 23 0:26 /user.slice /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n"


def test_only_cgroup2_mounts_are_found_with_their_root_and_whether_they_are_writable() -> None:
    assert mounts(HYBRID) == [("/", "/sys/fs/cgroup/unified", True)]
    assert mounts(PURE_V2) == [("/", "/sys/fs/cgroup", True)]
    assert mounts(READ_ONLY) == [("/", "/sys/fs/cgroup", False)]
    assert mounts(ESCAPED) == [("/user.slice", "/mnt/my cg", True)]
    assert mounts("garbage\n\n") == []


def test_the_mesh_s_cgroup_is_the_0_line_of_proc_self_cgroup() -> None:
    assert own_cgroup("4:memory:/x\n0::/user.slice/session-1.scope\n") == \
        "/user.slice/session-1.scope"
    assert own_cgroup("0::/\n") == "/"
    assert own_cgroup("4:memory:/x\n") is None  # cgroup v1 only


def test_the_mesh_s_cgroup_is_located_in_the_first_writable_mount_that_shows_it() -> None:
    assert locate(mounts(HYBRID), "/") == Path("/sys/fs/cgroup/unified")
    assert locate(mounts(PURE_V2), "/system.slice/m.service") == \
        Path("/sys/fs/cgroup/system.slice/m.service")
    assert locate(mounts(READ_ONLY), "/") is None
    assert locate(mounts(ESCAPED), "/user.slice/u/app") == Path("/mnt/my cg/u/app")
    assert locate(mounts(ESCAPED), "/system.slice") is None  # not below that mount's root
    assert locate(mounts(HYBRID), None) is None


def test_two_homes_never_share_a_cgroup_and_one_home_always_has_the_same() -> None:
    assert tree_name(Path("/a/home")) == tree_name(Path("/a/home"))
    assert tree_name(Path("/a/home")) != tree_name(Path("/b/home"))
    assert tree_name(Path("/a/home")).startswith("mycelium-")


@given(st.floats(min_value=0.001, max_value=4096, allow_nan=False))
def test_a_cpu_budget_becomes_its_share_of_each_period(cpu: float) -> None:
    quota, period = (int(x) for x in cpu_max(cpu).split())
    assert period == CPU_PERIOD
    assert quota >= 1000  # the kernel's least quota
    assert quota == max(1000, round(cpu * CPU_PERIOD))


def test_no_cpu_budget_is_no_quota() -> None:
    assert cpu_max(None) == cpu_max(0) == f"max {CPU_PERIOD}"
    assert cpu_max(0.5) == f"50000 {CPU_PERIOD}" and cpu_max(2) == f"200000 {CPU_PERIOD}"


def test_a_budget_writes_the_limits_of_every_offered_controller_memory_first() -> None:
    every = frozenset({"memory", "cpu", "pids"})
    assert limit_files(every, 256, 0.5) == {
        "memory.oom.group": "1", "memory.swap.max": "0", "memory.max": str(256 << 20),
        "cpu.max": f"50000 {CPU_PERIOD}", "pids.max": str(PIDS_MAX)}


@given(st.sets(st.sampled_from(["memory", "cpu", "pids", "io", "hugetlb"])),
       st.one_of(st.none(), st.integers(0, 1 << 20)),
       st.one_of(st.none(), st.floats(0, 64, allow_nan=False)))
def test_only_offered_controllers_get_files_and_memory_max_is_the_budget(
        offered: set[str], mem_mb: int | None, cpu: float | None) -> None:
    files = limit_files(frozenset(offered), mem_mb, cpu)
    assert {name.split(".")[0] for name in files} <= offered & {"memory", "cpu", "pids"}
    assert ("memory.max" in files) == ("memory" in offered and bool(mem_mb))
    if "memory.max" in files:
        assert files["memory.max"] == str((mem_mb or 0) * 1024 * 1024)
        assert next(iter(files)) == "memory.oom.group"  # before the limit can bite
    assert ("cpu.max" in files) == ("cpu" in offered)


def test_a_hybrid_machine_offers_no_limit_controllers_so_nothing_is_written() -> None:
    assert limit_files(frozenset({"hugetlb"}), 256, 1.0) == {}


def test_flat_keyed_files_read_by_key() -> None:
    events = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 1\n"
    assert count(events, "oom_kill") == 1 and count(events, "oom") == 2
    assert count("populated 1\nfrozen 0\n", "populated") == 1
    assert count("", "populated") == 0 and count("populated x\n", "populated") == 0
