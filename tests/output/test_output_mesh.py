"""`mycelium output` against real meshes: both streams with their times, follow across a kill
and replacement, exit tails in the log and status, kill -9 of the mesh mid-output, retention,
unique ids across restarts, rotation under writes, and every bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mesh_helpers import ENV, MeshProcess, cli, wait_until

from mycelium.output_files import Stream
from tests.meshkit import stopped_cleanly, workload_pids

HUMAN = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
                   r"(\S+@node-\d+#\d+) (stdout|stderr) (.*)$")


def deploy(home: Path, digest: str, app: str, *extra: str) -> None:
    result = cli(home, "deploy", app, digest, *extra)
    assert result.returncode == 0, result.stderr


def output(home: Path, app: str, *args: str) -> list[dict[str, Any]]:
    result = cli(home, "output", app, "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def numbers(records: list[dict[str, Any]], stream: str = "stdout") -> list[int]:
    return [int(r["line"].split()[2]) for r in records if r["stream"] == stream
            and r["line"].startswith(("out ", "err "))]


class Follow:
    """`mycelium output APP -f --json` in the background, its lines collected."""

    def __init__(self, home: Path, app: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mycelium", "output", app, "-f", "--json", "--home",
             str(home), *args], stdout=subprocess.PIPE, text=True, env=ENV)
        self.records: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.records.append(json.loads(line))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def follow() -> Iterator[list[Follow]]:
    started: list[Follow] = []
    yield started
    for f in started:
        f.stop()


def configured(home: Path, **logs: int) -> Path:
    (home / "mycelium.toml").write_text(
        "[logs]\n" + "".join(f"{key} = {value}\n" for key, value in logs.items()))
    return home


def test_output_shows_both_streams_with_their_times(mesh: MeshProcess, home: Path,
                                                   digests: dict[str, str]) -> None:
    deploy(home, digests["chatty"], "chatty")
    wait_until(lambda: len(numbers(output(home, "chatty"), "stderr")) >= 10, what="10 lines")
    records = output(home, "chatty")
    assert {tuple(sorted(r)) for r in records} == {
        ("app", "instance", "line", "node", "stream", "ts")}
    (instance,) = {r["instance"] for r in records}
    assert instance == mesh.app("chatty")["instances"][0]["id"]
    assert numbers(records) == list(range(len(numbers(records))))
    for r in records:  # ts is when the line was written, to within 1 s
        written = float(r["line"].split()[3])
        ts = time.mktime(time.strptime(r["ts"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert -1.0 <= ts + float(r["ts"][19:-1] or 0) - written <= 1.0
    human = cli(home, "output", "chatty", "--tail", "4").stdout.splitlines()
    matched = [HUMAN.match(line) for line in human]
    assert len(human) == 4 and all(matched)
    assert {m.group(2) for m in matched if m} == {"stdout", "stderr"}
    only_err = output(home, "chatty", "--stream", "stderr", "--tail", "3")
    assert [r["stream"] for r in only_err] == ["stderr"] * 3
    assert output(home, "chatty", "--since", "1h")[:1] == records[:1]
    assert output(home, "chatty", "--since", "2099-01-01T00:00:00Z") == []
    assert output(home, "chatty", "--since", "2s") != []
    assert len(output(home, "chatty", "--instance", instance, "--node",
                      records[0]["node"], "--tail", "1")) == 1


def test_follow_goes_on_and_picks_up_the_replacement(mesh: MeshProcess, home: Path,
                                                    digests: dict[str, str],
                                                    follow: list[Follow]) -> None:
    deploy(home, digests["chatty"], "chatty")
    (first,) = [i["id"] for i in mesh.ready("chatty", 1)]
    f = Follow(home, "chatty", "--stream", "stdout")
    follow.append(f)
    wait_until(lambda: len(f.records) >= 5, what="followed lines")
    assert cli(home, "kill", "chatty").returncode == 0
    wait_until(lambda: any(r["instance"] != first for r in f.records), 30,
               what="the replacement's lines in the same stream")
    wait_until(lambda: len([r for r in f.records if r["instance"] != first]) >= 5)
    for instance in {r["instance"] for r in f.records}:  # in order per instance, none twice
        seen = numbers([r for r in f.records if r["instance"] == instance])
        assert seen == list(range(seen[0], seen[0] + len(seen)))
    replacement = [r for r in f.records if r["instance"] != first]
    assert numbers(replacement)[0] == 0  # from its first line on


def test_an_exit_carries_its_output_tail(mesh: MeshProcess, home: Path,
                                         digests: dict[str, str]) -> None:
    deploy(home, digests["crashy"], "crashy")
    (old,) = [i["id"] for i in mesh.ready("crashy", 1)]
    with pytest.raises(Exception):  # noqa: B017 - the edge answers 502: crashy exited
        urllib.request.urlopen(f"{mesh.url}/crashy/crash", timeout=10)

    def replaced() -> dict[str, Any] | None:
        insts = [i for i in mesh.app("crashy")["instances"] if i["id"] != old]
        return insts[0] if insts and insts[0]["last_exit"] else None

    new = wait_until(replaced, 30, what="the replacement with last_exit")
    last = new["last_exit"]
    assert last["instance"] == old and last["reason"] == "exit code 3"
    assert last["output_tail"] == ["crashy: crashing on request (exit code 3)"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", last["at"])
    terminated = [json.loads(line) for line in cli(home, "logs", "--json", "--app",
                                                   "crashy").stdout.splitlines()]
    terminated = [r for r in terminated if r["event"] == "child_terminated"]
    assert terminated[-1]["extra"]["output_tail"] == last["output_tail"]
    human = cli(home, "logs", "--app", "crashy").stdout.splitlines()
    at = next(i for i, line in enumerate(human) if "child_terminated" in line)
    assert human[at + 1] == "    | crashy: crashing on request (exit code 3)"
    kept = output(home, "crashy", "--instance", old)
    assert [r["line"] for r in kept][-1] == "crashy: crashing on request (exit code 3)"
    assert kept[0]["line"].startswith("crashy: listening on port")


def test_bad_input_is_one_error_line_and_exit_2(mesh: MeshProcess, home: Path,
                                               digests: dict[str, str]) -> None:
    deploy(home, digests["chatty"], "chatty")
    for args in (["nosuchapp"], ["chatty", "--instance", "chatty@node-1#999999"],
                 ["chatty", "--tail", "-1"], ["chatty", "--since", "yesterday"],
                 ["chatty", "--stream", "stdin"], ["chatty", "--tail", "many"],
                 ["chatty", "--node", "node-9"]):
        result = cli(home, "output", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)


def test_kill_9_of_the_mesh_loses_no_output(tmp_path: Path, home: Path,
                                           digests: dict[str, str]) -> None:
    first = MeshProcess(home, nodes=1)
    try:
        deploy(home, digests["chatty"], "chatty")
        (old,) = [i["id"] for i in first.ready("chatty", 1)]
    finally:
        first.proc.kill()  # kill -9 while the workload talks
        first.proc.wait(10)
    stream = Stream(home / "instances" / old / "output", "stdout")
    size = stream.extent()[1]
    wait_until(lambda: stream.extent()[1] > size + 500, what="output while the mesh is down")
    assert len(workload_pids(home)) == 1  # still running: never blocked, no SIGPIPE
    while_down = output(home, "chatty")  # no mesh: the home is read
    assert {r["instance"] for r in while_down} == {old}
    second = MeshProcess(home, nodes=1)
    with stopped_cleanly(second, home):
        (new,) = [i["id"] for i in second.ready("chatty", 1)]
        assert new != old
        kept = output(home, "chatty", "--instance", old)
        seen = numbers(kept)
        assert seen == list(range(len(seen))) and len(seen) > len(numbers(while_down))
        assert numbers(kept, "stderr")[:len(seen) - 1] == list(range(len(seen) - 1))
        ended = json.loads((home / "instances" / old / "output" / "exit.json").read_text())
        assert "SIGPIPE" not in ended["reason"] and "42" not in ended["reason"]


def test_retention_and_ids_never_reused(tmp_path: Path, home: Path,
                                        digests: dict[str, str]) -> None:
    configured(home, output_keep=2)
    ids: list[str] = []
    mesh = MeshProcess(home, nodes=1)
    with stopped_cleanly(mesh, home):
        deploy(home, digests["chatty"], "chatty")
        for _ in range(3):
            (current,) = [i["id"] for i in mesh.ready("chatty", 1)]
            ids.append(current)
            wait_until(lambda: output(home, "chatty", "--tail", "1"))
            assert cli(home, "kill", "chatty").returncode == 0
            wait_until(lambda c=current: mesh.ready("chatty", 1)[0]["id"] != c, 30)
        (last,) = [i["id"] for i in mesh.ready("chatty", 1)]
        # the oldest is dropped when a new one starts (or once that second is over)
        wait_until(lambda: cli(home, "output", "chatty", "--instance", ids[0]).returncode == 2,
                   10)
        dropped = cli(home, "output", "chatty", "--instance", ids[0])
        assert dropped.returncode == 2 and "unknown instance" in dropped.stderr
        assert output(home, "chatty", "--instance", ids[2], "--tail", "1")
    after_down = output(home, "chatty", "--tail", "1")  # the last that ran
    assert {r["instance"] for r in after_down} == {last}
    mesh = MeshProcess(home, nodes=1)
    with stopped_cleanly(mesh, home):
        (again,) = [i["id"] for i in mesh.ready("chatty", 1)]
    serials = [int(i.rpartition("#")[2]) for i in [*ids, last, again]]
    assert serials == sorted(serials) and len(set(serials)) == len(serials)


def test_rotation_under_writes_through_the_mesh(tmp_path: Path, home: Path,
                                                digests: dict[str, str]) -> None:
    configured(home, output_max_mb=1, output_files=20)
    mesh = MeshProcess(home, nodes=1)
    with stopped_cleanly(mesh, home):
        deploy(home, digests["burst"], "burst")
        (inst,) = [i["id"] for i in mesh.ready("burst", 1)]
        stream = Stream(home / "instances" / inst / "output", "stdout")
        wait_until(lambda: len(stream.segments()) >= 2, 30, what="rotations")
        records = output(home, "burst", "--stream", "stdout")
        burst = [int(r["line"].split()[2]) for r in records if r["line"].startswith("burst ")]
        assert burst == list(range(60_000))
        assert os.stat(stream.live).st_size < 2 * 1024 * 1024
