"""``[node] run_as``: a user that does not exist stops ``up`` before anything starts; ``root``
is an explicit opt-out that says so; a named user is used as is."""

from __future__ import annotations

import json
import pwd
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from isokit import deploy, escapees, get, needs_root
from mesh_helpers import ENV, MeshProcess, cli, wait_until

from tests.meshkit import stopped_cleanly

pytestmark = needs_root


def configure(home: Path, run_as: str) -> None:
    config = home / "mycelium.toml"
    config.write_text(config.read_text() + f'[node]\nrun_as = "{run_as}"\n')


def test_a_run_as_user_that_does_not_exist_is_one_error_line_and_nothing_starts(
        home: Path) -> None:
    configure(home, "no-such-user-here")
    done = subprocess.run([sys.executable, "-m", "mycelium", "up", "--home", str(home),
                           "--edge-port", "0", "--nodes", "1"],
                          capture_output=True, text=True, timeout=60, env=ENV, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "no-such-user-here" in done.stderr and done.stdout == ""
    assert not (home / "control.sock").exists()
    assert not list((home / "logs").glob("*.jsonl")) and not (home / "mesh.lock").exists()


def test_run_as_root_is_an_explicit_opt_out_with_a_warning(
        home: Path, digests: dict[str, str]) -> None:
    configure(home, "root")
    mesh = MeshProcess(home, nodes=1)
    with stopped_cleanly(mesh, home):
        assert "warning: [node] run_as = root" in mesh.wait_line("warning:")
        deploy(home, "probe", digests["probe"])
        inst = mesh.ready("probe", 1)[0]
        assert get(mesh, "probe", "/id")["uid"] == 0 and inst["uid"] is None
        records = [json.loads(line) for line in
                   (home / "logs" / "supervision.jsonl").read_text().splitlines()]
        assert any(r["event"] == "warning" and "run_as = root" in r["reason"] for r in records)


def test_run_as_a_named_user_runs_every_workload_as_that_user(
        home: Path, digests: dict[str, str]) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody on this machine")
    configure(home, "nobody")
    mesh = MeshProcess(home, nodes=1)
    with stopped_cleanly(mesh, home):
        deploy(home, "probe", digests["probe"])
        inst = mesh.ready("probe", 1)[0]
        me = get(mesh, "probe", "/id")
        assert me["uid"] == inst["uid"] == nobody.pw_uid and me["gid"] == nobody.pw_gid
        assert me["no_new_privs"] == "1"


def test_with_a_shared_uid_stop_still_kills_what_the_instance_started(
        home: Path, digests: dict[str, str]) -> None:
    """A named user is shared by every instance: they are told apart by their private HOME."""
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody on this machine")
    configure(home, "nobody")
    mesh = MeshProcess(home, nodes=1)
    with stopped_cleanly(mesh, home):
        deploy(home, "probe", digests["probe"])  # the same uid, another instance: untouched
        probe = mesh.ready("probe", 1)[0]
        deploy(home, "escaper", digests["escaper"])
        inst = mesh.ready("escaper", 1)[0]
        procs = wait_until(lambda: (lambda f: f if len(f) == 2 else None)(escapees(inst)),
                           15.0, "the escaper's two sleeps")
        assert cli(home, "stop", "escaper").returncode == 0
        wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                                   for p in procs), 15.0, "the escaped sleeps to die")
        assert psutil.Process(probe["pid"]).is_running()
