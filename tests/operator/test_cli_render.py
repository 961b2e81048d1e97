"""What an operator reads: the rendered tree and status, and ``mycelium logs`` in all its modes.

The renderers are pure (documents in, text out); ``mycelium logs`` runs as a real process on a
home whose log is written by :class:`SupervisionLog`, as the mesh writes it.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from mycelium.operator import SupervisionLog
from mycelium.operator.render import format_uptime, render_status, render_tree

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
ENV.pop("MYCELIUM_HOME", None)
NOW = 1_800_000_000.0

TREE: dict[str, Any] = {
    "id": "mesh", "type": "supervisor", "kind": "supervisor", "path": "mesh",
    "strategy": "one_for_one", "intensity": 10, "period": 10.0, "status": "running",
    "restarts": 0, "pid": 4242, "children": [
        {"id": "fabric", "type": "worker", "status": "running", "restarts": 2,
         "started_at": NOW - 75, "mailbox": 3, "meta": {}},
        {"id": "nodes", "type": "supervisor", "kind": "dynamic_supervisor",
         "strategy": "one_for_one", "intensity": 10, "period": 10.0, "status": "running",
         "restarts": 0, "children": [
             {"id": "apps", "type": "supervisor", "kind": "dynamic_supervisor",
              "strategy": "one_for_one", "intensity": 1000, "period": 1.0,
              "status": "restarting", "restarts": 1, "children": [
                  {"id": "hello@node-1:95f4ef85e87c", "type": "worker", "status": "running",
                   "restarts": 1, "meta": {"app": "hello"},
                   "instance": {"id": "hello@node-1#3", "state": "Ready", "pid": 31337,
                                "url": "http://127.0.0.1:40123", "restarts": 1,
                                "started_at": NOW - 4.25}},
                  {"id": "[bold]odd[/bold]", "type": "worker", "status": "undefined",
                   "restarts": 0, "meta": {}},
              ]},
         ]},
    ],
}


def test_the_tree_shows_supervisors_workers_and_instances_one_line_each() -> None:
    text = render_tree(TREE, now=NOW)
    lines = text.splitlines()
    assert lines[0] == "mesh  supervisor one_for_one  intensity 10/10s  running  pid 4242  " \
                       "restarts 0"
    assert lines[1] == "├── fabric  worker  running  up 1m15s  restarts 2  mailbox 3"
    assert "nodes  dynamic supervisor one_for_one  intensity 10/10s" in lines[2]
    assert "apps  dynamic supervisor one_for_one  intensity 1000/1s  restarting" in lines[3]
    assert ("hello@node-1:95f4ef85e87c  Ready  pid 31337  up 4.2s  restarts 1  "
            "http://127.0.0.1:40123  (hello@node-1#3)") in lines[4]
    assert "[bold]odd[/bold]  worker  undefined" in lines[5]  # shown as it is, not as markup
    assert len(lines) == 6 and "\x1b" not in text


def test_the_tree_is_never_wrapped_and_colours_only_on_request() -> None:
    wide = {**TREE, "children": [{"id": "x" * 300, "type": "worker", "status": "running",
                                  "restarts": 0}]}
    assert len(render_tree(wide, now=NOW, width=40).splitlines()) == 2
    coloured = render_tree(TREE, now=NOW, color=True)
    assert "\x1b[" in coloured and "running" in coloured


@pytest.mark.parametrize(("seconds", "text"), [
    (0.04, "0.0s"), (4.25, "4.2s"), (75, "1m15s"), (3725, "1h02m"), (90000, "1d01h"), (-3, "0.0s"),
])
def test_uptimes_read_short(seconds: float, text: str) -> None:
    assert format_uptime(seconds) == text


def test_status_renders_apps_instances_and_nodes() -> None:
    text = render_status({
        "apps": [{"app": "hello", "digest": "ab" * 32, "min": 1, "max": 3, "desired": 3,
                  "ready": 1, "state": "degraded", "reason": "exit code 1",
                  "instances": [{"id": "hello@node-1#1", "node": "node-1", "state": "Ready",
                                 "pid": 7, "url": "http://127.0.0.1:1", "restarts": 4}]}],
        "nodes": [{"name": "node-1", "state": "up"}, {"name": "node-2", "state": "lost"}]})
    lines = text.splitlines()
    assert lines[0] == ("hello  degraded  digest abababababab  ready 1/3 (min 1, max 3)  "
                        "reason: exit code 1")
    assert lines[1].split() == ["hello@node-1#1", "node-1", "Ready", "pid", "7",
                                "http://127.0.0.1:1", "restarts", "4"]
    assert lines[2] == "nodes: node-1 up, node-2 lost"


def test_status_renders_a_canary_with_both_digests_its_share_and_both_error_rates() -> None:
    text = render_status({
        "apps": [{"app": "web", "digest": "b" * 64, "min": 1, "max": 2, "desired": 2,
                  "ready": 1, "state": "canary", "instances": [],
                  "canary": {"digest": "b" * 64, "ready": 1, "count": 1, "weight": 30.0,
                             "error_rate": 12.5, "old": {"digest": "a" * 64,
                                                         "error_rate": 0.0}}}],
        "nodes": []})
    assert text.splitlines()[1] == ("  canary bbbbbbbbbbbb 1/1 Ready, 30.0% of requests, 5xx "
                                    "12.5% vs 0.0% for aaaaaaaaaaaa")


# --------------------------------------------------------------------------- mycelium logs


def _records(home: Path) -> SupervisionLog:
    log = SupervisionLog(home)
    log.write({"ts": NOW, "event": "started", "supervisor": "mesh", "child": "fabric"})
    log.write({"ts": NOW + 1, "event": "child_terminated",
               "supervisor": "mesh/nodes/node-1/apps/hello", "child": "hello@node-1:95f4",
               "reason": "killed by SIGKILL", "extra": {"app": "hello", "pid": 4242}})
    log.write({"ts": NOW + 1.001, "event": "backoff", "supervisor": "mesh/nodes/node-1/apps/hello",
               "child": "hello@node-1:95f4", "reason": "killed by SIGKILL", "delay": 0.4,
               "extra": {"app": "hello"}})
    log.write({"ts": NOW + 1.5, "event": "child_restarted",
               "supervisor": "mesh/nodes/node-1/apps/hello", "child": "hello@node-1:95f4",
               "extra": {"app": "hello", "restarts": 1}})
    return log


def _logs(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mycelium", "logs", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=30, env=ENV, check=False)


def test_logs_prints_one_plain_line_per_event_oldest_first(tmp_path: Path) -> None:
    _records(tmp_path).close()
    result = _logs(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[2] for line in lines] == ["started", "child_terminated", "backoff",
                                                   "child_restarted"]
    assert lines[1].split()[1:] == ["mesh/nodes/node-1/apps/hello", "child_terminated",
                                    "hello@node-1:95f4", "app=hello", 'reason="killed', 'by',
                                    'SIGKILL"', "pid=4242"]
    assert lines[2].endswith("delay=0.400s") and lines[3].endswith("restarts=1")
    assert "\x1b" not in result.stdout  # a pipe gets no colours


def test_logs_filters_by_app_and_speaks_json(tmp_path: Path) -> None:
    _records(tmp_path).close()
    assert len(_logs(tmp_path, "--app", "hello").stdout.splitlines()) == 3
    docs = [orjson.loads(line) for line in _logs(tmp_path, "--json").stdout.splitlines()]
    assert [d["event"] for d in docs] == ["started", "child_terminated", "backoff",
                                          "child_restarted"]
    for doc in docs:
        assert {"ts", "event", "supervisor", "child", "app", "reason"} <= set(doc)
        assert doc["ts"].startswith("2027-01-15T08:0") and doc["ts"].endswith("Z")
    assert docs[0]["app"] is None and docs[2]["delay"] == 0.4


def test_logs_colours_on_a_terminal(tmp_path: Path) -> None:
    _records(tmp_path).close()
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "mycelium", "logs", "--home", str(tmp_path)],
                            stdout=slave, stderr=slave, env=ENV)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(30) == 0
    assert b"\x1b[33mchild_terminated\x1b[0m" in out and b"\x1b[36mbackoff" in out


@pytest.mark.timeout(30)
def test_logs_follow_prints_new_records_as_they_land_across_rotation(tmp_path: Path) -> None:
    log = _records(tmp_path)
    log.close()
    follower = subprocess.Popen(
        [sys.executable, "-m", "mycelium", "logs", "--follow", "--app", "hello", "--home",
         str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    lines: list[str] = []
    seen = threading.Condition()

    def pump() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            with seen:
                lines.append(line.rstrip("\n"))
                seen.notify_all()

    def wait_lines(n: int) -> None:
        deadline = time.monotonic() + 15
        with seen:
            while len(lines) < n:
                assert time.monotonic() < deadline, f"follow printed only {lines}"
                seen.wait(0.5)

    threading.Thread(target=pump, daemon=True).start()
    try:
        wait_lines(3)  # the history first (hello's records only)
        small = SupervisionLog(tmp_path, rotate_bytes=600, keep=3)
        for n in range(6):  # enough to rotate the file under the follower twice
            small.write({"event": "child_restarted", "supervisor": "mesh/nodes/node-2/apps/hello",
                         "child": f"hello@node-2:{n}", "extra": {"app": "hello", "restarts": n}})
            small.write({"event": "started", "supervisor": "mesh", "child": "edge"})  # not hello
        small.close()
        wait_lines(9)
        assert [line.split()[3] for line in lines[3:]] == [f"hello@node-2:{n}" for n in range(6)]
        assert len(small.files()) > 1
    finally:
        follower.terminate()
        follower.wait(10)
