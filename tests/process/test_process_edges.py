"""Spawn errors say why; leftovers of a dead mesh are reaped safely; probes and ports work."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from process_helpers import PY, Spawner, gone, wait_for

from mycelium.errors import MyceliumError
from mycelium.node.process import (
    ProcessError,
    ProcessRecord,
    describe_exit,
    free_port,
    probe_health,
    reap_leftovers,
    spawn,
)


def spawn_error(argv: list[str], cwd: Path, tmp_path: Path) -> str:
    with pytest.raises(ProcessError) as info:
        spawn(argv, cwd, {}, tmp_path / "out.log")
    assert isinstance(info.value, MyceliumError)
    return str(info.value)


def test_spawn_errors_name_the_precise_reason(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01\x02 not an executable")
    garbage.chmod(0o755)
    assert "empty command line" in spawn_error([], tmp_path, tmp_path)
    assert "binary missing" in spawn_error([str(tmp_path / "nope")], tmp_path, tmp_path)
    assert "binary missing" in spawn_error(["./nope"], tmp_path, tmp_path)
    assert "not found on PATH" in spawn_error(["no-such-binary-xyz"], tmp_path, tmp_path)
    assert "not executable" in spawn_error([str(text)], tmp_path, tmp_path)
    assert "not a regular file" in spawn_error([str(tmp_path)], tmp_path, tmp_path)
    assert "not a valid executable" in spawn_error([str(garbage)], tmp_path, tmp_path)
    assert "working directory" in spawn_error(["sh"], tmp_path / "missing", tmp_path)
    with pytest.raises(ProcessError, match="'PORT' must be a string"):
        spawn(["sh"], tmp_path, {"PORT": 8080}, tmp_path / "out.log")  # type: ignore[dict-item]


def test_argv_may_hold_paths(spawned: Spawner, tmp_path: Path) -> None:
    assert spawned([Path("/bin/sh"), "-c", "exit 4"]).wait(10) == 4  # type: ignore[list-item]


def test_a_relative_binary_is_found_in_the_working_directory(
        spawned: Spawner, tmp_path: Path) -> None:
    script = tmp_path / "binary"
    script.write_text("#!/bin/sh\necho relative-ok\n")
    script.chmod(0o755)
    assert spawned(["./binary"]).wait(10) == 0
    assert "relative-ok" in (tmp_path / "logs" / "out.log").read_text()


def test_a_binary_still_open_for_writing_is_retried_then_reported_busy(
        spawned: Spawner, tmp_path: Path) -> None:
    binary = tmp_path / "fresh"
    writer = open(binary, "w")  # noqa: SIM115 - the open write descriptor is the point
    writer.write("#!/bin/sh\necho fresh-ok\n")
    writer.flush()
    binary.chmod(0o755)
    try:
        assert "busy" in spawn_error([str(binary)], tmp_path, tmp_path)
        threading.Timer(0.05, writer.close).start()  # the writer lets go while spawn retries
        assert spawned([str(binary)]).wait(10) == 0
    finally:
        writer.close()
    assert "fresh-ok" in (tmp_path / "logs" / "out.log").read_text()


def test_describe_exit_words() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(137) == "exit code 137"
    assert describe_exit(-signal.SIGTERM) == "killed by SIGTERM"
    assert describe_exit(-200) == "killed by signal 200"


def test_a_process_record_round_trips_through_json(spawned: Spawner) -> None:
    workload = spawned(["sleep", "30"])
    record = workload.record()
    again = ProcessRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    assert record.create_time == pytest.approx(psutil.Process(workload.pid).create_time())
    with pytest.raises(ProcessError, match="bad process record"):
        ProcessRecord.from_dict({"pid": 1})


@pytest.fixture
def orphaned(tmp_path: Path) -> Iterator[list[ProcessRecord]]:
    """Two workloads left running by a 'mesh' process that was then killed with SIGKILL."""
    code = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from mycelium.node.process import spawn\n"
        "d = Path(sys.argv[1])\n"
        "ws = [spawn(['sh', '-c', 'sleep 60 & wait'], d, {}, d / 'w.log') for _ in range(2)]\n"
        "print(json.dumps([w.record().to_dict() for w in ws]), flush=True)\n"
        "time.sleep(60)\n")
    mesh = subprocess.Popen([PY, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    assert mesh.stdout is not None
    records = [ProcessRecord.from_dict(r) for r in json.loads(mesh.stdout.readline())]
    mesh.kill()
    mesh.wait()
    mesh.stdout.close()
    yield records
    for record in records:  # whatever the test did, leave nothing behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pgid, signal.SIGKILL)


@pytest.mark.timeout(30)
def test_reap_leftovers_stops_the_groups_a_killed_mesh_left(
        orphaned: list[ProcessRecord]) -> None:
    leaders = [psutil.Process(r.pid) for r in orphaned]
    assert not any(gone(p) for p in leaders)
    assert sorted(reap_leftovers(orphaned, grace=1.0)) == sorted(r.pid for r in orphaned)
    assert all(gone(p) for p in leaders)
    assert reap_leftovers(orphaned, grace=1.0) == []  # nothing left, nothing killed


@pytest.mark.timeout(30)
def test_reap_leftovers_spares_a_process_whose_create_time_differs(
        orphaned: list[ProcessRecord]) -> None:
    reused = [ProcessRecord(r.pid, r.pgid, r.create_time - 3600.0) for r in orphaned]
    assert reap_leftovers(reused, grace=0.2) == []
    assert not any(gone(psutil.Process(r.pid)) for r in orphaned)


@pytest.mark.timeout(30)
def test_reap_leftovers_stops_the_survivors_of_a_leader_that_died_unreaped(
        tmp_path: Path) -> None:
    code = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from mycelium.node.process import spawn\n"
        "d = Path(sys.argv[1])\n"
        "w = spawn(['sh', '-c', 'trap \"exit 0\" USR1; sleep 60 & echo $! > gc.pid; wait'],"
        " d, {}, d / 'w.log')\n"
        "print(json.dumps(w.record().to_dict()), flush=True)\n"
        "time.sleep(60)\n")
    mesh = subprocess.Popen([PY, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    assert mesh.stdout is not None
    record = ProcessRecord.from_dict(json.loads(mesh.stdout.readline()))
    mesh.kill()
    mesh.wait()
    mesh.stdout.close()
    try:
        assert wait_for(lambda: (tmp_path / "gc.pid").read_text().strip() != "")
        grandchild = psutil.Process(int((tmp_path / "gc.pid").read_text()))
        leader = psutil.Process(record.pid)
        os.kill(record.pid, signal.SIGUSR1)  # the leader exits; the grandchild lives on
        assert wait_for(lambda: gone(leader))
        if not leader.is_running():
            pytest.skip("PID 1 reaps orphans here: the leader vanished, nothing proves the group")
        assert reap_leftovers([record], grace=1.0) == [record.pid]
        assert gone(grandchild)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pgid, signal.SIGKILL)


def test_probe_health_is_true_only_on_200(health_server: int) -> None:
    assert probe_health(f"http://127.0.0.1:{health_server}/health", timeout=2.0)
    assert probe_health(f"http://127.0.0.1:{health_server}/health?deep=1", timeout=2.0)
    assert not probe_health(f"http://127.0.0.1:{health_server}/broken", timeout=2.0)
    with pytest.raises(ValueError, match="http://"):
        probe_health("ftp://127.0.0.1/", timeout=1.0)


def test_probe_health_is_false_when_nothing_listens_or_nothing_answers() -> None:
    assert not probe_health(f"http://127.0.0.1:{free_port()}/health", timeout=1.0)
    with socket.socket() as silent:  # accepts (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        assert not probe_health(f"http://127.0.0.1:{port}/health", timeout=0.2)


def test_a_workload_becomes_healthy_on_its_free_port(spawned: Spawner) -> None:
    port = free_port()
    server = (
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n")
    spawned([PY, "-c", server], env={"PORT": str(port)})
    assert wait_for(lambda: probe_health(f"http://127.0.0.1:{port}/health", 0.5), timeout=10)
