"""Secrets end to end: a real ``mycelium up``, secrets set through the CLI (stdin only), real
workloads reading ``$CREDENTIALS_DIRECTORY`` and their environment, rollouts under load, and
no value anywhere it must not be."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from mesh_helpers import ENV, MeshProcess, cli, wait_until

from mycelium.output_files import EXIT_FILE, OUTPUT_DIR
from tests.meshkit import stopped_cleanly

VALUE = "s3cr3t-Value-7f1e9a"
NEW_VALUE = "n3w-Value-b2c4d6"


def secret(home: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``mycelium secret <args> --home <home>`` with ``stdin`` piped in."""
    return subprocess.run([sys.executable, "-m", "mycelium", "secret", *args, "--home",
                           str(home)], input=stdin, capture_output=True, timeout=90, env=ENV,
                          check=False)


def set_value(home: Path, app: str) -> None:
    """``mycelium secret set APP DB_PASSWORD`` with :data:`VALUE`; it must succeed."""
    done = secret(home, "set", app, "DB_PASSWORD", stdin=VALUE.encode())
    assert done.returncode == 0, done.stderr


@contextlib.contextmanager
def killed_at_the_end(home: Path) -> Iterator[MeshProcess]:
    """A mesh on ``home`` that is killed with SIGKILL when the block ends (its workloads live
    on, for the next ``up`` on the same home to find)."""
    mesh = MeshProcess(home)
    try:
        yield mesh
    finally:
        mesh.kill9()


TYPER = "import sys; from mycelium.cli.full import run; run(sys.argv[1:])"


def secret_both_ways(home: Path, *args: str, stdin: bytes = b""
                     ) -> tuple[subprocess.CompletedProcess[bytes], bool]:
    """``secret <args>`` as the ``mycelium`` command runs it, and whether Typer served it."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "mycelium", "secret",
                           *args, "--home", str(home)], input=stdin, capture_output=True,
                          timeout=90, env=ENV, check=False)
    lines = done.stderr.splitlines(keepends=True)
    typer = any(ln.startswith(b"import time:") and ln.split(b"|")[-1].strip() == b"typer"
                for ln in lines)
    done.stderr = b"".join(ln for ln in lines if not ln.startswith(b"import time:"))
    return done, typer


def secret_typer(home: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``secret <args>`` through the Typer application only."""
    return subprocess.run([sys.executable, "-c", TYPER, "secret", *args, "--home", str(home)],
                          input=stdin, capture_output=True, timeout=90, env=ENV, check=False)


def fetch(port: int, app: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", f"/{app}/")
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, (orjson.loads(body) if resp.status == 200 else {})
    finally:
        conn.close()


def no_value_leaked(mesh: MeshProcess, *values: str) -> None:
    """Neither value in status, tree, logs, secret list, inspect, up's output, command lines
    or the home's files outside the instances' credentials directories and the workloads' own
    captured output (what a workload prints is its own: ``mycelium output`` shows it)."""
    home = mesh.home
    outputs = {"status --json": cli(home, "status", "--json").stdout,
               "status": cli(home, "status").stdout,
               "tree": cli(home, "tree", "--json").stdout,
               "logs": cli(home, "logs", "--json").stdout,
               "secret list": secret(home, "list", "vault").stdout.decode(),
               "secret list --json": secret(home, "list", "vault", "--json").stdout.decode(),
               "up's output": "\n".join(mesh.lines)}
    for digest in mesh_digests(mesh):
        outputs[f"inspect {digest}"] = cli(home, "inspect", digest, "--json").stdout
    for proc in psutil.process_iter(["pid", "cmdline"]):
        outputs[f"pid {proc.info['pid']}"] = " ".join(proc.info["cmdline"] or ())
    for path in home.rglob("*"):
        mesh_record = path.name == EXIT_FILE  # the mesh's record of an end, beside the output
        if path.is_file() and (mesh_record or not {"credentials", OUTPUT_DIR} & set(path.parts)):
            outputs[str(path)] = path.read_bytes().decode("utf-8", "replace")
    for value in values:
        assert not [k for k, o in outputs.items() if value in o], f"{value} leaked"


def mesh_digests(mesh: MeshProcess) -> list[str]:
    return [d["digest"] for d in mesh.status()["apps"] if d["digest"]]


@pytest.mark.timeout(180)
def test_a_secret_set_before_deploy_reaches_every_instance_as_a_file_and_env_var(
        home: Path, digests: dict[str, str]) -> None:
    result = secret(home, "set", "vault", "DB_PASSWORD", stdin=VALUE.encode())
    assert result.returncode == 0, result.stderr
    assert VALUE not in (result.stdout + result.stderr).decode()
    listed = secret(home, "list", "vault").stdout.decode().split()
    assert listed[0] == "DB_PASSWORD" and listed[1].endswith("Z")

    mesh = MeshProcess(home)
    with stopped_cleanly(mesh, home):
        deployed = cli(home, "deploy", "vault", digests["vault"], "--max", "3")
        assert deployed.returncode == 0, deployed.stderr
        ready = mesh.ready("vault", 3)
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(30):
            status, doc = fetch(mesh.port, "vault")
            assert status == 200
            seen[doc["instance"]] = doc
            if len(seen) == 3:
                break
        assert set(seen) == {i["id"] for i in ready}
        uids = {i["id"]: i.get("uid") for i in ready}
        for doc in seen.values():  # owned by the workload's uid (its own under a root mesh)
            assert doc["env"] == VALUE
            uid = os.getuid() if uids[doc["instance"]] is None else uids[doc["instance"]]
            assert doc["files"] == {"DB_PASSWORD": {"value": VALUE, "mode": 0o400, "uid": uid}}
            assert doc["dir_mode"] == 0o500
            assert Path(doc["dir"]).parent.name == doc["instance"].replace("/", "_")
        no_value_leaked(mesh, VALUE)
        stopped = cli(home, "stop", "vault")
        assert stopped.returncode == 0, stopped.stderr
        wait_until(lambda: not any(Path(d["dir"]).exists() for d in seen.values()), 30,
                   "credentials directories removed once their instances stopped")


class Load:
    """Requests through the edge in a loop until stopped; counts failures and values seen."""

    def __init__(self, port: int, app: str) -> None:
        self.port, self.app = port, app
        self.failed = 0
        self.ok = 0
        self.values: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, doc = fetch(self.port, self.app)
            except OSError:
                status, doc = 0, {}
            if status == 200:
                self.ok += 1
                files = doc["files"]
                self.values.append(files["DB_PASSWORD"]["value"] if files else "")
            else:
                self.failed += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.timeout(240)
def test_setting_and_removing_a_secret_of_a_running_app_rolls_it_out_with_no_failed_request(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    home = mesh.home
    set_value(home, "plain")
    assert cli(home, "deploy", "plain", digests["plain"], "--max", "3").returncode == 0
    old = {i["id"] for i in mesh.ready("plain", 3)}
    generation = mesh.app("plain")["generation"]
    load = Load(mesh.port, "plain")
    try:
        wait_until(lambda: load.ok > 5, 10, "load flowing")
        result = secret(home, "set", "plain", "DB_PASSWORD", stdin=NEW_VALUE.encode())
        assert result.returncode == 0, result.stderr
        assert b"3/3 instances replaced" in result.stdout
        doc = mesh.app("plain")
        assert doc["generation"] > generation and doc["digest"] == digests["plain"]
        new = {i["id"] for i in doc["instances"]}
        assert len(new) == 3 and not new & old
        count = len(load.values)
        wait_until(lambda: len(load.values) > count + 5, 10, "requests after the rollout")
        assert set(load.values[count:]) == {NEW_VALUE}

        removed = secret(home, "rm", "plain", "DB_PASSWORD")
        assert removed.returncode == 0, removed.stderr
        count = len(load.values)
        wait_until(lambda: len(load.values) > count + 5, 10, "requests after the removal")
        assert set(load.values[count:]) == {""}
    finally:
        load.stop()
    assert load.failed == 0, f"{load.failed} failed requests of {load.ok + load.failed}"
    assert secret(home, "list", "plain").stdout == b""
    no_value_leaked(mesh, VALUE, NEW_VALUE)


@pytest.mark.timeout(180)
def test_bad_secret_input_exits_2_with_one_error_line_and_changes_nothing(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    home = mesh.home
    assert secret(home, "set", "plain", "TOKEN", stdin=b"first").returncode == 0
    assert cli(home, "deploy", "plain", digests["plain"]).returncode == 0
    mesh.ready("plain", 1)
    before = (mesh.app("plain")["generation"], secret(home, "list", "plain").stdout)
    cases = [(("set", "plain", "lower"), b"x"), (("set", "plain", "9BAD"), b"x"),
             (("set", "plain", "A" * 65), b"x"), (("set", "plain", "TOKEN"), b""),
             (("set", "plain", "TOKEN"), b"x" * (64 * 1024 + 1)),
             (("set", "Bad_App", "TOKEN"), b"x"), (("rm", "plain", "lower"), b"")]
    for args, stdin in cases:
        result = secret(home, *args, stdin=stdin)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, lines)
    assert (mesh.app("plain")["generation"], secret(home, "list", "plain").stdout) == before
    missing = secret(home, "rm", "plain", "NOPE")
    assert missing.returncode == 1 and missing.stderr.startswith(b"error: ")
    assert secret(home, "set", "plain", "TOKEN", "--no-wait", stdin=b"x" * 64 * 1024
                  ).returncode == 0


@pytest.mark.timeout(180)
def test_a_secrets_rollout_that_fails_rolls_back_to_the_instances_still_running(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    home = mesh.home
    set_value(home, "vault")
    deployed = cli(home, "deploy", "vault", digests["vault"], "--max", "2", "--timeout", "3")
    assert deployed.returncode == 0, deployed.stderr
    old = {i["id"] for i in mesh.ready("vault", 2)}
    load = Load(mesh.port, "vault")
    try:
        wait_until(lambda: load.ok > 5, 10, "load flowing")
        # env_secrets names DB_PASSWORD: without it the new instances cannot start
        removed = secret(home, "rm", "vault", "DB_PASSWORD")
        assert removed.returncode == 1, removed.stderr
        assert removed.stderr.startswith(b"error: ") and b"rollout failed" in removed.stderr
        doc = wait_until(lambda: (d := mesh.app("vault"))["plan_status"] == "failed" and d, 20,
                         "the plan rolled back")
        assert "not Ready within 3s" in doc["reason"]
        wait_until(lambda: {i["id"] for i in mesh.app("vault")["instances"]} == old, 20,
                   "only the old instances left")
        count = len(load.values)
        wait_until(lambda: len(load.values) > count + 5, 10, "requests after the rollback")
        assert set(load.values[count:]) == {VALUE}
    finally:
        load.stop()
    assert load.failed == 0


@pytest.mark.timeout(180)
def test_the_next_up_after_a_kill_9_removes_the_dead_instances_credentials(
        home: Path, digests: dict[str, str]) -> None:
    set_value(home, "vault")
    with killed_at_the_end(home) as first:
        assert cli(home, "deploy", "vault", digests["vault"], "--max", "2").returncode == 0
        first.ready("vault", 2)
        dirs = {Path(fetch(first.port, "vault")[1]["dir"]) for _ in range(10)}
        assert dirs and all(d.is_dir() for d in dirs)
    assert all(d.is_dir() for d in dirs)  # a dead mesh cannot clean up ...
    second = MeshProcess(home)
    with stopped_cleanly(second, home):
        # ... the next up does, once it reaped them: before it serves, or (its edge workers
        # adopted, the old instances serving until the new ones are Ready) at the takeover
        second.wait_line("reaped 2 workload(s)", 60)
        assert not any(d.exists() for d in dirs)
        second.ready("vault", 2)
        assert fetch(second.port, "vault")[1]["env"] == VALUE


@pytest.mark.timeout(180)
def test_an_apply_files_env_secrets_must_exist_and_become_environment_variables(
        mesh: MeshProcess, digests: dict[str, str], tmp_path: Path) -> None:
    home = mesh.home
    desired = tmp_path / "mesh.toml"
    with_env = (f'[apps.plain]\ndigest = "{digests["plain"]}"\nmax = 2\n'
                'env_secrets = ["DB_PASSWORD"]\n')
    desired.write_text(with_env)
    missing = cli(home, "apply", str(desired))
    assert missing.returncode == 2 and "DB_PASSWORD" in missing.stderr, missing.stderr
    assert mesh.status()["apps"] == []
    set_value(home, "plain")
    applied = cli(home, "apply", str(desired))
    assert applied.returncode == 0, applied.stderr
    mesh.ready("plain", 2)
    assert {fetch(mesh.port, "plain")[1]["env"] for _ in range(6)} == {VALUE}
    again = cli(home, "plan", str(desired), "--json")
    assert again.returncode == 0 and '"unchanged"' in again.stdout, again.stdout
    # dropping env_secrets rolls the app out without the variable (the file stays)
    desired.write_text(with_env.replace('env_secrets = ["DB_PASSWORD"]\n', ""))
    assert cli(home, "apply", str(desired)).returncode == 0
    wait_until(lambda: {fetch(mesh.port, "plain")[1]["env"] for _ in range(6)} == {None}, 30,
               "instances without the variable")
    assert {fetch(mesh.port, "plain")[1]["files"]["DB_PASSWORD"]["value"]
            for _ in range(4)} == {VALUE}


@pytest.mark.timeout(120)
def test_a_workload_that_prints_its_secret_and_crashes_leaves_no_value_in_the_mesh(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    home = mesh.home
    set_value(home, "plain")
    assert cli(home, "deploy", "plain", digests["plain"]).returncode == 0
    first = mesh.ready("plain", 1)[0]
    with contextlib.suppress(OSError):
        fetch_path(mesh.port, "/plain/crash")
    replaced = wait_until(lambda: [i for i in mesh.app("plain")["instances"]
                                   if i["id"] != first["id"] and i["state"] == "Ready"], 30,
                          "the replacement")
    logs = cli(home, "logs", "--json").stdout
    assert "<secret DB_PASSWORD>" in logs  # the tail is there, the value is not
    status = orjson.dumps(mesh.status()).decode()
    assert "connecting with password <secret DB_PASSWORD>" in status, replaced
    no_value_leaked(mesh, VALUE)


def fetch_path(port: int, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
    finally:
        conn.close()


@pytest.mark.timeout(180)
def test_a_secret_printed_before_a_kill_9_of_the_mesh_is_hidden_in_the_next_ups_records(
        home: Path, digests: dict[str, str]) -> None:
    set_value(home, "plain")
    # the workload outlives the killed mesh; the next up stops it and records its end
    with killed_at_the_end(home) as first:
        assert cli(home, "deploy", "plain", digests["plain"]).returncode == 0
        printed = first.ready("plain", 1)[0]
        fetch_path(first.port, "/plain/print")
        wait_until(lambda: VALUE in cli(home, "output", "plain").stdout, 20, "the printed line")
    second = MeshProcess(home)
    with stopped_cleanly(second, home):
        assert second.ready("plain", 1)[0]["id"] != printed["id"]
        second.wait_line("reaped", 60)  # before it serves, or once it took over the edge
        record = home / "instances" / printed["id"].replace("/", "_") / OUTPUT_DIR / EXIT_FILE
        ended = orjson.loads(record.read_bytes())
        assert ended["reason"] == "its mesh died (stopped at the next up)"
        assert "connecting with password <secret DB_PASSWORD>" in ended["output_tail"], ended
        assert VALUE in (record.parent / "stderr").read_text()  # its own output is its own ...
        no_value_leaked(second, VALUE)  # ... the mesh's records of it hide the value


@pytest.mark.timeout(240)
def test_secret_set_to_a_running_mesh_is_served_without_typer_and_says_the_same(
        home: Path, digests: dict[str, str]) -> None:
    # no mesh: the fast path gives way before it reads stdin, Typer's writes the home's store
    stored, typer = secret_both_ways(home, "set", "plain", "TOKEN", stdin=b"first")
    assert typer and stored.returncode == 0, stored.stderr
    assert b"no mesh running: instances get it when they start" in stored.stdout
    mesh = MeshProcess(home)
    with stopped_cleanly(mesh, home):
        assert cli(home, "deploy", "plain", digests["plain"], "--max", "3").returncode == 0
        mesh.ready("plain", 3)
        generation = mesh.app("plain")["generation"]
        for args, stdin in [(("set", "plain", "lower"), b"x"), (("set", "Bad_App", "T"), b"x"),
                            (("set", "plain", "TOKEN"), b""),
                            (("set", "plain", "TOKEN"), b"x" * (64 * 1024 + 1))]:
            quick, typer = secret_both_ways(home, *args, stdin=stdin)
            full = secret_typer(home, *args, stdin=stdin)
            assert not typer and quick.returncode == full.returncode == 2, args
            assert quick.stderr == full.stderr and quick.stderr.startswith(b"error: "), args
        assert mesh.app("plain")["generation"] == generation  # nothing changed
        quick, typer = secret_both_ways(home, "set", "plain", "TOKEN", stdin=VALUE.encode())
        full = secret_typer(home, "set", "plain", "TOKEN", stdin=NEW_VALUE.encode())
        assert not typer and quick.returncode == full.returncode == 0, (quick, full)
        said = {re.sub(rb"in [0-9.]+s", b"in Ts", done.stdout) for done in (quick, full)}
        assert said == {b"secret TOKEN of plain set: 3/3 instances replaced in Ts\n"}
        assert mesh.app("plain")["generation"] == generation + 2
        quick, typer = secret_both_ways(home, "set", "plain", "TOKEN", "--no-wait",
                                        "--timeout=5", stdin=b"third")
        assert not typer and quick.returncode == 0
        assert re.fullmatch(rb"secret TOKEN of plain set: rolling out \(generation \d+, not "
                            rb"waiting\)\n", quick.stdout), quick.stdout
        no_value_leaked(mesh, VALUE, NEW_VALUE)


@pytest.mark.timeout(120)
def test_a_check_that_prints_the_secret_leaves_no_value_in_status_or_the_log(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    home = mesh.home
    set_value(home, "checked")
    assert cli(home, "deploy", "checked", digests["checked"]).returncode == 0
    said = "exit code 1: token <secret DB_PASSWORD>"
    wait_until(lambda: any((i.get("last_check") or {}).get("detail") == said
                           for i in mesh.app("checked")["instances"]), 30, "the check's detail")
    wait_until(lambda: f"liveness_failed: careless: {said}" in cli(home, "logs").stdout, 30,
               "the restart's reason in the log")
    no_value_leaked(mesh, VALUE)
