"""The control plane's CPU priority (``[mesh] control_nice``): the decision, and a real process
that lowers its own priority while everything it spawns keeps the original one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.priority import Facts, plan
from tests.meshkit import repo_env

ROOT = Facts(nice=0, lowest=-20, session_leader=True, autogroup_nice=0)
"""A mesh under systemd as root: leads its session, may lower any nice."""

# A stand-in for `mycelium up`: lowers its priority, starts a thread, spawns a workload and
# an exec check the way the mesh does, and prints what each runs at.
STAND_IN = r"""
import json, os, sys, tempfile, threading
from pathlib import Path
from mycelium.priority import data_plane_priority, lower_control_plane
from mycelium.node.checks import run_exec
from mycelium.node.process import ProcessError, spawn

def nice(pid, tid=None):
    stat = Path(f"/proc/{pid}/task/{tid or pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])

def autogroup(pid):
    text = Path(f"/proc/{pid}/autogroup").read_text().split()
    return text[0], int(text[-1])

plan = lower_control_plane(int(sys.argv[1]))
later = threading.Event()
thread = threading.Thread(target=later.wait)
thread.start()
with data_plane_priority():  # one thread steps back for a spawn; the others stay
    during = [nice(os.getpid(), threading.get_native_id()), nice(os.getpid(), thread.native_id)]
with tempfile.TemporaryDirectory() as tmp:
    try:  # a spawn that fails puts the thread back too
        spawn([f"{tmp}/missing"], Path(tmp), {}, Path(tmp) / "out.log")
    except ProcessError:
        pass
    workload = spawn(["sleep", "30"], Path(tmp), {}, Path(tmp) / "out.log")
    ok, check = run_exec(["sh", "-c", "cut -d' ' -f19 /proc/self/stat"], Path(tmp),
                         {"PATH": os.defpath}, 5.0)
    print(json.dumps({
        "why": plan.why, "threads": [nice(os.getpid(), t) for t in os.listdir("/proc/self/task")],
        "during": during, "autogroup": autogroup(os.getpid()), "workload": nice(workload.pid),
        "workload_autogroup": autogroup(workload.pid), "check": check}))
    workload.terminate(grace=0.5)
later.set()
"""


def stand_in(control_nice: int, *prefix: str) -> Any:
    """Run the stand-in in a session of its own (as systemd runs a service)."""
    return orjson.loads(subprocess.run(
        [*prefix, sys.executable, "-c", STAND_IN, str(control_nice)], capture_output=True,
        env=repo_env(), start_new_session=True, timeout=30, check=True).stdout)


needs_autogroup = pytest.mark.skipif(not Path("/proc/self/autogroup").exists(),
                                     reason="kernel without autogroups")


# -- the decision ---------------------------------------------------------------------------

def test_a_privileged_session_leader_renices_its_threads_and_its_autogroup() -> None:
    decided = plan(5, ROOT)
    assert (decided.threads, decided.autogroup, decided.children, decided.why) == (5, 5, 0, "")


def test_zero_is_off_and_an_in_process_edge_keeps_the_mesh_at_its_priority() -> None:
    assert (plan(0, ROOT).threads, plan(0, ROOT).autogroup, plan(0, ROOT).why) == (None, None, "")
    inside = plan(5, ROOT, in_process_edge=True)
    assert (inside.threads, inside.autogroup) == (None, None) and "workers = 0" in inside.why


def test_without_the_right_to_lower_a_nice_the_threads_stay_and_the_operator_is_told() -> None:
    unprivileged = Facts(nice=0, lowest=20, session_leader=True, autogroup_nice=0)
    decided = plan(5, unprivileged)
    assert decided.threads is None and "CAP_SYS_NICE" in decided.why
    assert decided.autogroup == 5  # its children are sessions of their own: none slows down
    alone = plan(5, Facts(nice=0, lowest=20, session_leader=False, autogroup_nice=0))
    assert (alone.threads, alone.autogroup) == (None, None) and alone.why


def test_room_under_rlimit_nice_is_enough_and_the_operators_session_is_never_touched() -> None:
    decided = plan(5, Facts(nice=3, lowest=3, session_leader=False, autogroup_nice=0))
    assert (decided.threads, decided.autogroup, decided.children) == (8, None, 3)


@given(control=st.integers(0, 19), nice=st.integers(-20, 19), lowest=st.integers(-20, 20),
       leader=st.booleans(), group=st.none() | st.integers(-20, 19), inside=st.booleans())
def test_children_always_keep_the_original_nice_and_only_a_higher_nice_is_ever_asked(
        control: int, nice: int, lowest: int, leader: bool, group: int | None,
        inside: bool) -> None:
    decided = plan(control, Facts(nice, lowest, leader, group), inside)
    assert decided.children == nice
    if decided.threads is not None:
        assert lowest <= nice < decided.threads <= 19 and control and not inside
    if decided.autogroup is not None:
        assert leader and group is not None and group < decided.autogroup <= 19
    if control == 0:
        assert (decided.threads, decided.autogroup, decided.why) == (None, None, "")


# -- a real process --------------------------------------------------------------------------

@pytest.mark.timeout(30)
@needs_autogroup
def test_the_mesh_runs_below_its_children_which_keep_the_original_nice() -> None:
    me = os.getpriority(os.PRIO_PROCESS, 0)
    if plan(5, Facts(me, -20, True, 0)).threads is None or os.geteuid() != 0:
        pytest.skip("needs root at a nice below 19")
    got = stand_in(5)
    assert set(got["threads"]) == {min(19, me + 5)}  # after a failed spawn too
    assert got["during"] == [me, min(19, me + 5)]  # the nice is the spawning thread's alone
    assert got["autogroup"][1] == 5
    assert got["workload"] == me and got["check"] == f"exit code 0: {me}"
    name, nice = got["workload_autogroup"]
    assert name != got["autogroup"][0] and nice == 0  # a new session's autogroup starts at 0


@pytest.mark.timeout(30)
def test_control_nice_zero_changes_nothing() -> None:
    me = os.getpriority(os.PRIO_PROCESS, 0)
    got = stand_in(0)
    assert set(got["threads"]) == {me} and got["during"] == [me, me]
    assert got["workload"] == me and got["check"] == f"exit code 0: {me}"
    assert got["why"] == ""


@pytest.mark.timeout(30)
@needs_autogroup
def test_a_mesh_that_may_not_lower_a_nice_leaves_its_threads_alone() -> None:
    setpriv, prlimit = shutil.which("setpriv"), shutil.which("prlimit")
    if os.geteuid() != 0 or setpriv is None or prlimit is None:
        pytest.skip("needs root (to drop CAP_SYS_NICE), setpriv and prlimit")
    me = os.getpriority(os.PRIO_PROCESS, 0)  # root as in a container: no CAP_SYS_NICE
    got = stand_in(5, setpriv, "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", prlimit,
                   "--nice=0", "--")
    assert set(got["threads"]) == {me} and got["workload"] == me
    assert "CAP_SYS_NICE" in str(got["why"]) and got["autogroup"][1] == 5
