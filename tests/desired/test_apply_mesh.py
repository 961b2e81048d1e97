"""``plan``, ``apply`` and ``export`` against a real mesh (``mycelium up`` subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from files import CRASHY, EXAMPLES, HELLO, manifest, table, write
from mesh_helpers import ENV, MeshProcess, cli, wait_until

from mycelium.operator.client import ControlError


def _pids(mesh: MeshProcess) -> dict[str, list[int]]:
    return {doc["app"]: sorted(i["pid"] for i in doc["instances"] if i["state"] == "Ready")
            for doc in mesh.status()["apps"]}


def _spores(home: Path) -> set[str]:
    return {p.name for p in (home / "repo").glob("*.spore")}


def _versions(mesh: MeshProcess) -> dict[str, str]:
    running = mesh.client.request("desired")["apps"]
    return {doc["app"]: doc["manifest"]["version"] for doc in running}


def test_the_examples_file_brings_every_app_ready_and_a_second_apply_changes_nothing(
        mesh: MeshProcess, home: Path, tmp_path: Path) -> None:
    file = EXAMPLES / "mesh.toml"
    plan = cli(home, "plan", str(file))
    assert plan.returncode == 0, plan.stderr
    assert "hello       + create (version 1.0.0, digest new, min 3, max 3)" in plan.stdout
    applied = cli(home, "apply", str(file))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[-1].startswith("applied 3 changes in ")
    assert "hello: create ok in" in applied.stderr  # plain progress lines: not a terminal
    status = {doc["app"]: doc for doc in mesh.status()["apps"]}
    assert {a: (d["ready"], d["state"]) for a, d in status.items()} == {
        "hello": (3, "running"), "crashy": (1, "running"), "slow-start": (1, "running")}
    pids, spores = _pids(mesh), _spores(home)
    again = cli(home, "apply", str(file))
    assert again.returncode == 0, again.stderr
    assert again.stdout == "nothing to do: 3 apps unchanged\n"
    assert _pids(mesh) == pids and _spores(home) == spores  # nothing restarted, no new spore
    exported = cli(home, "export")
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "exported.toml").write_text(exported.stdout)
    replan = cli(home, "plan", str(tmp_path / "exported.toml"), "--prune")
    assert replan.returncode == 0, replan.stderr
    assert [line.split()[1:] for line in replan.stdout.splitlines()[:-1]] == [
        ["=", "unchanged"]] * 3
    assert cli(home, "plan", str(file)).stdout.count("= unchanged") == 3


def test_update_scale_and_prune_in_one_apply(mesh: MeshProcess, home: Path,
                                            tmp_path: Path) -> None:
    one = write(tmp_path / "one.toml",
                table("hello", HELLO, manifest(tmp_path, "hello"), max=3),
                table("crashy", CRASHY, manifest(tmp_path, "crashy")),
                table("other", HELLO, manifest(tmp_path, "other")))
    assert cli(home, "apply", str(one)).returncode == 0
    old = _pids(mesh)
    two = write(tmp_path / "two.toml",
                table("hello", HELLO, manifest(tmp_path, "hello", "2.0.0",
                                               env={"HELLO_VERSION": "2.0.0"}), max=3),
                table("crashy", CRASHY, manifest(tmp_path, "crashy"), max=2, cpu=0.2))
    plan = cli(home, "plan", str(two), "--prune")
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert lines[0].startswith('hello   ~ update (version 1.0.0 → 2.0.0, env.HELLO_VERSION '
                               'unset → "2.0.0", digest ')
    assert lines[0].endswith("… → new)")
    assert lines[1] == "crashy  ~ settings (max 1 → 2, max_instances 1 → 2, cpu 0.1 → 0.2)"
    assert lines[2].startswith("other   - destroy (version 1.0.0, digest ")
    without = cli(home, "plan", str(two)).stdout
    assert "- destroy" not in without and "1 running app not in the file kept" in without
    assert _pids(mesh) == old  # plan changes nothing
    applied = cli(home, "apply", str(two), "--prune")
    assert applied.returncode == 0, applied.stderr
    assert "hello node-1: draining" in applied.stderr  # blue/green phases, node by node
    assert _versions(mesh) == {"hello": "2.0.0", "crashy": "1.0.0"}
    assert _pids(mesh)["crashy"][0] in old["crashy"]  # a settings change restarts nothing
    wait_until(lambda: not any(d["app"] == "other" for d in mesh.status()["apps"]), 10,
               "other gone")
    assert cli(home, "plan", str(two), "--prune").stdout.count("= unchanged") == 2


def test_a_bad_file_is_one_error_and_deploys_nothing_not_even_the_valid_apps(
        mesh: MeshProcess, home: Path, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml",
                table("hello", HELLO, manifest(tmp_path, "hello")),
                table("crashy", CRASHY, manifest(tmp_path, "crashy"), min=3, max=2))
    for command in ("apply", "plan"):
        run = cli(home, command, str(bad))
        assert run.returncode == 2
        assert run.stderr == (f"error: {bad}:8: apps.crashy.min: min 3 is greater than "
                              "max 2\n")
        assert run.stdout == ""
    assert mesh.status()["apps"] == [] and _spores(home) == set()


def test_one_failed_rollout_is_rolled_back_and_the_others_are_kept(
        mesh: MeshProcess, home: Path, tmp_path: Path) -> None:
    one = write(tmp_path / "one.toml",
                table("hello", HELLO, manifest(tmp_path, "hello")),
                table("broken", CRASHY, manifest(tmp_path, "broken")))
    assert cli(home, "apply", str(one)).returncode == 0
    two = write(tmp_path / "two.toml",
                table("hello", HELLO, manifest(tmp_path, "hello", "2.0.0")),
                table("broken", CRASHY, manifest(tmp_path, "broken", "2.0.0",
                                                 env={"CRASH_AT_START": "1"}), timeout=2))
    run = cli(home, "apply", str(two))
    assert run.returncode == 1, run.stderr
    rows = {line.split()[0]: line for line in run.stdout.splitlines()}
    assert "  ok  " in rows["hello"] and "failed: rolled back: " in rows["broken"]
    assert run.stdout.splitlines()[-1].endswith(": 1 ok, 1 failed (broken)")
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: 1 of 2 changes failed: broken (failed: rolled back: rollout of ")
    assert errors[0].endswith("; the others are kept")
    assert _versions(mesh) == {"hello": "2.0.0", "broken": "1.0.0"}
    assert mesh.app("broken")["state"] == "failed" and mesh.app("broken")["ready"] == 1
    replan = cli(home, "plan", str(two)).stdout.splitlines()
    assert replan[0] == "hello   = unchanged"
    assert replan[1].startswith("broken  ~ update (version 1.0.0 → 2.0.0")  # applying retries
    exported = tmp_path / "exported.toml"
    exported.write_text(cli(home, "export").stdout)  # what runs: broken back at 1.0.0
    assert cli(home, "plan", str(exported)).stdout.count("= unchanged") == 2


def test_the_mesh_refuses_a_batch_computed_before_another_deploy(
        mesh: MeshProcess, home: Path, tmp_path: Path) -> None:
    hello = write(tmp_path / "hello.toml", table("hello", HELLO, manifest(tmp_path, "hello")))
    assert cli(home, "apply", str(hello)).returncode == 0
    seen = {d["app"]: d["generation"] for d in mesh.client.request("desired")["apps"]}
    digest = mesh.app("hello")["digest"]
    other = cli(home, "publish", str(HELLO), "--manifest", str(manifest(tmp_path, "other")))
    plans = [{"app": "other", "digest": other.stdout.strip()}]
    deployed = cli(home, "deploy", "hello", digest, "--max", "2")  # a deploy in between
    assert deployed.returncode == 0, deployed.stderr
    with pytest.raises(ControlError, match=r"the mesh changed since this apply read it \(hello "
                       r"moved from generation \d+ to \d+, by another apply or deploy\); "
                       r"nothing was changed") as caught:
        mesh.client.request("apply", plans=plans, stops=[], expect={"hello": seen["hello"],
                                                                    "other": 0})
    assert caught.value.exit_code == 1
    assert not any(d["app"] == "other" for d in mesh.status()["apps"])
    with pytest.raises(ControlError, match="is app 'other', not 'hello'"):
        mesh.client.request("apply", plans=[{**plans[0], "app": "hello"}], stops=[], expect={})
    current = mesh.app("hello")["generation"]
    two = [{"app": "hello", "digest": digest, "max": 3}, {"app": "hello", "digest": digest}]
    with pytest.raises(ControlError, match="names app 'hello' twice"):
        mesh.client.request("apply", plans=two, stops=[], expect={"hello": current})
    assert mesh.app("hello")["generation"] == current and mesh.app("hello")["max"] == 2


def test_two_applies_on_one_home_run_one_after_the_other(
        mesh: MeshProcess, home: Path, tmp_path: Path) -> None:
    slow = EXAMPLES / "slow-start"
    first = write(tmp_path / "first.toml",
                  table("slow-start", slow / "slow-start",
                        manifest(tmp_path, "slow-start", env={"START_DELAY": "6"})),
                  table("hello", HELLO, manifest(tmp_path, "hello")))
    second = write(tmp_path / "second.toml",
                   table("hello", HELLO, manifest(tmp_path, "hello", "2.0.0"), max=2))
    argv = [sys.executable, "-m", "mycelium", "apply", "--home", str(home)]
    a = subprocess.Popen([*argv, str(first)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV)
    try:  # `first` holds the lock while slow-start starts (~6 s)
        wait_until(lambda: any(d["app"] == "slow-start" for d in mesh.status()["apps"]), 20,
                   "the first apply's batch")
        b = cli(home, "apply", str(second))
        _, a_err = a.communicate(timeout=60)
    finally:
        a.kill()
        a.wait()
    assert a.returncode == 0, a_err
    assert b.returncode == 0, b.stderr
    assert b.stderr.startswith("waiting for another apply on this home (pid ")
    assert "hello  ~ update (version 1.0.0 → 2.0.0" in b.stderr  # planned after the first
    assert _versions(mesh) == {"hello": "2.0.0", "slow-start": "1.0.0"}
    assert cli(home, "plan", str(second)).stdout.startswith("hello  = unchanged")


def test_no_wait_returns_once_the_batch_is_published(mesh: MeshProcess, home: Path,
                                                     tmp_path: Path) -> None:
    file = write(tmp_path / "mesh.toml", table("hello", HELLO, manifest(tmp_path, "hello")))
    run = cli(home, "apply", str(file), "--no-wait")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("hello: create sent (generation ")
    mesh.ready("hello", 1)


def test_without_a_mesh_plan_apply_and_export_exit_1(home: Path) -> None:
    file = write(home.parent / "mesh.toml", table("hello", HELLO, manifest(home.parent, "x")))
    assert cli(home, "plan", str(file)).returncode == 2  # the file is checked first
    file.write_text(table("hello", HELLO, manifest(home.parent, "hello")))
    for args in (("plan", str(file)), ("apply", str(file)), ("export",)):
        run = cli(home, *args)
        assert run.returncode == 1 and run.stderr.startswith("error: no mesh running at "), args


def _run(home: Path, *args: str, typer: bool) -> tuple[int, bytes, bytes, bool]:
    """``mycelium ARGS`` by ``python -m mycelium`` or by the Typer application alone; also
    whether Typer was imported (``-X importtime``), i.e. which path served it."""
    head = ["-c", "import sys; from mycelium.cli.full import run; run(sys.argv[1:])"] \
        if typer else ["-m", "mycelium"]
    done = subprocess.run([sys.executable, "-X", "importtime", *head, *args, "--home",
                           str(home)], capture_output=True, timeout=60, env=ENV, check=False)
    lines = done.stderr.splitlines(keepends=True)
    imports = {ln.split(b"|")[-1].strip() for ln in lines if ln.startswith(b"import time:")}
    err = b"".join(ln for ln in lines if not ln.startswith(b"import time:"))
    return done.returncode, done.stdout, err, b"typer" in imports


def test_plan_is_served_without_typer_and_prints_the_typer_paths_bytes(
        mesh: MeshProcess, home: Path, tmp_path: Path) -> None:
    file = write(tmp_path / "mesh.toml", table("hello", HELLO, manifest(tmp_path, "hello")))
    assert cli(home, "apply", str(file)).returncode == 0
    changed = write(tmp_path / "two.toml", table("hello", HELLO, manifest(tmp_path, "hello"),
                                                  max=2))
    bad = write(tmp_path / "bad.toml", "[apps.hello]\nmins = 1\n")
    for args in ((str(file),), (str(changed), "--json"), (str(changed), "--prune"),
                 (str(bad),)):
        fast = _run(home, "plan", *args, typer=False)
        slow = _run(home, "plan", *args, typer=True)
        assert not fast[3] and slow[3], args
        assert fast[:3] == slow[:3], args


def test_a_file_canary_starts_a_canary_on_an_update_and_promote_finishes_it(
        mesh: MeshProcess, home: Path, tmp_path: Path) -> None:
    one = write(tmp_path / "one.toml",
                table("hello", HELLO, manifest(tmp_path, "hello"), max=2, canary=1))
    assert cli(home, "apply", str(one)).returncode == 0  # a create: no canary
    assert mesh.app("hello")["state"] == "running"
    two = write(tmp_path / "two.toml", table(
        "hello", HELLO, manifest(tmp_path, "hello", "2.0.0", env={"HELLO_VERSION": "2.0.0"}),
        max=2, canary=1))
    applied = cli(home, "apply", str(two))
    assert applied.returncode == 0, applied.stderr
    doc = mesh.app("hello")
    assert doc["state"] == "canary" and doc["canary"]["ready"] == 1, doc
    assert sorted(i["digest"] == doc["digest"] for i in doc["instances"]) == [False, False, True]
    assert cli(home, "promote", "hello").returncode == 0
    wait_until(lambda: _versions(mesh) == {"hello": "2.0.0"}
               and mesh.app("hello")["state"] == "running"
               and len(mesh.app("hello")["instances"]) == 2, 30, "promoted")
    history = cli(home, "history", "hello")
    assert history.returncode == 0 and history.stdout.count("\n") == 3, history.stdout
