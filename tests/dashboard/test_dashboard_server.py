"""The dashboard's server with stand-in sources: real sockets, real threads, no mesh."""

from __future__ import annotations

import copy
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from dash_helpers import cli, free_port

from mycelium.operator.dashboard import Dashboard, DashboardConfig, DashboardError, UnsafeBind

pytestmark = pytest.mark.timeout(30)

TREE = {"path": "mesh", "type": "supervisor", "kind": "supervisor", "status": "running",
        "children": [{"id": "fabric", "type": "worker", "status": "running", "restarts": 0}]}
STATUS = {"apps": [], "nodes": [{"name": "node-1", "state": "up"}]}


class Sources:
    """Stand-ins for the mesh's ``tree()`` and ``status()``; ``fail`` makes them raise."""

    def __init__(self) -> None:
        self.fail = False
        self.doc: dict[str, Any] = copy.deepcopy(TREE)

    def tree(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("the mesh is stopping")
        return copy.deepcopy(self.doc)

    def status(self) -> dict[str, Any]:
        return STATUS


@pytest.fixture
def dash(tmp_path: Any) -> Iterator[tuple[Dashboard, Sources]]:
    log = tmp_path / "supervision.jsonl"
    log.write_bytes(b'{"ts":"2026-11-27T03:00:00.000Z","event":"started","supervisor":"mesh",'
                    b'"child":"fabric","app":null}\n')
    sources = Sources()
    board = Dashboard(DashboardConfig(port=0, sample_interval=0.1), tree=sources.tree,
                      status=sources.status, log_file=log)
    board.start()
    try:
        yield board, sources
    finally:
        board.stop()
    assert not board.running


def get(board: Dashboard, path: str, host: str | None = None) -> tuple[int, dict[str, str],
                                                                       bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", board.port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class EventStream:
    """A raw SSE client: ``next(name)`` returns the next event of that name's data."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.buf = b""

    def next(self, name: str, timeout: float = 2.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            while b"\n\n" in self.buf:
                block, self.buf = self.buf.split(b"\n\n", 1)
                fields = dict(line.split(b": ", 1) for line in block.split(b"\n")
                              if b": " in line and not line.startswith(b":"))
                if fields.get(b"event") == name.encode():
                    return orjson.loads(fields[b"data"])
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name!r} event within {timeout}s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("the stream closed")
            # chunked transfer coding: drop the size lines, keep the payload
            self.buf += b"\n".join(line for line in chunk.replace(b"\r\n", b"\n").split(b"\n")
                                   if not _is_hex(line)) + (b"\n" if chunk.endswith(b"\n")
                                                             else b"")

    def close(self) -> None:
        self.sock.close()


def _is_hex(line: bytes) -> bool:
    return bool(line) and all(c in b"0123456789abcdefABCDEF" for c in line)


def test_the_page_and_its_files_are_served_with_a_strict_policy(dash: Any) -> None:
    board, _ = dash
    assert board.url == f"http://127.0.0.1:{board.port}/"
    status, headers, body = get(board, "/")
    assert status == 200 and b"<title>Mycelium Mesh" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"),
                       ("favicon.svg", "image/svg+xml")):
        status, headers, _ = get(board, f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind)
    assert get(board, "/static/../bind.py")[0] == 404
    assert get(board, "/static/nope.js")[0] == 404


def test_state_and_log_come_from_the_sources(dash: Any) -> None:
    board, sources = dash
    state = orjson.loads(get(board, "/api/state")[2])
    assert state["tree"]["children"][0]["path"] == "mesh/fabric"
    assert state["nodes"] == [{"name": "node-1", "state": "up"}] and state["error"] is None
    assert [r["child"] for r in orjson.loads(get(board, "/api/log")[2])] == ["fabric"]
    sources.fail = True  # the mesh busy: the last good tree stays, the reason is shown
    state = orjson.loads(get(board, "/api/state")[2])
    assert state["tree"]["path"] == "mesh" and "stopping" in state["error"]


def test_a_published_record_is_pushed_at_once(dash: Any) -> None:
    board, _ = dash
    stream = EventStream(board.port)
    try:
        history = stream.next("history")
        assert [r["child"] for r in history] == ["fabric"]
        assert stream.next("state")["tree"]["path"] == "mesh"
        start = time.monotonic()
        record = {"ts": "2026-11-27T03:00:01.000Z", "event": "child_terminated",
                  "supervisor": "mesh/nodes/node-1/apps/hello", "child": "hello@node-1:abc",
                  "app": "hello", "reason": "killed by SIGKILL"}
        threading.Thread(target=board.publish, args=(record,)).start()  # any thread
        assert stream.next("log")["reason"] == "killed by SIGKILL"
        assert time.monotonic() - start < 1.0
        board.publish(record)  # the same record twice (file tail + push) shows once
        by_app = orjson.loads(get(board, "/api/log?app=hello")[2])
        assert [r["event"] for r in by_app] == ["child_terminated"]
    finally:
        stream.close()


def test_a_host_header_that_is_not_loopback_is_refused(dash: Any) -> None:
    board, _ = dash
    assert get(board, "/", host="evil.example:80")[0] == 421
    assert get(board, "/", host=f"localhost:{board.port}")[0] == 200
    assert get(board, "/", host=f"[::1]:{board.port}")[0] == 200


def test_lifecycle_misuse_is_a_clear_error(dash: Any) -> None:
    board, _ = dash
    with pytest.raises(DashboardError, match="already started"):
        board.start()
    taken = Dashboard(DashboardConfig(port=board.port), tree=dict, status=dict)
    with pytest.raises(DashboardError, match="cannot listen"):
        taken.start()
    taken.stop()
    Dashboard(DashboardConfig(), tree=dict, status=dict).stop()  # never started: no-op


def test_a_non_loopback_bind_is_refused_unless_configured() -> None:
    refused = Dashboard(DashboardConfig(host="0.0.0.0"), tree=dict, status=dict)
    with pytest.raises(UnsafeBind, match="not a loopback"):
        refused.start()
    assert not refused.running
    allowed = Dashboard(DashboardConfig(host="0.0.0.0", allow_remote=True), tree=dict,
                        status=dict)
    allowed.start()
    try:
        assert allowed.running
        conn = http.client.HTTPConnection("127.0.0.1", allowed.port, timeout=5)
        conn.request("GET", "/", headers={"Host": "mesh.example:80"})  # no Host check then
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        allowed.stop()
    assert not allowed.running


def test_up_refuses_a_remote_ui_host_or_the_edge_port_before_starting(home_dir: Any) -> None:
    remote = cli(home_dir, "up", "--ui-port", str(free_port()), "--edge-port", "0",
                 env={"MYCELIUM_UI_HOST": "0.0.0.0"}, timeout=30)
    assert remote.returncode == 2, remote.stderr
    assert remote.stderr.startswith("error: ") and "loopback" in remote.stderr
    port = free_port()
    same = cli(home_dir, "up", "--ui-port", str(port), "--edge-port", str(port), timeout=30)
    assert same.returncode == 2 and "edge" in same.stderr, same.stderr
    assert not (home_dir / "control.sock").exists()


@pytest.mark.timeout(60)
def test_up_fails_cleanly_when_the_ui_port_is_taken(home_dir: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli(home_dir, "up", "--ui-port", str(port), "--edge-port", str(free_port()),
                   "--nodes", "1", timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (f"error: dashboard: cannot listen on "
                                            f"127.0.0.1:{port}: address already in use")
    assert "mesh shutdown" in done.stdout or "shutdown" in done.stdout  # the tree was stopped
    assert not (home_dir / "control.sock").exists()


def test_a_change_no_record_announces_is_pushed_by_the_next_look(dash: Any) -> None:
    board, sources = dash  # sample_interval 0.1 s
    stream = EventStream(board.port)
    try:
        stream.next("history")
        assert stream.next("state")["tree"]["children"][0]["state"] == "running"
        sources.doc["children"][0]["status"] = "restarting"
        start = time.monotonic()
        assert stream.next("state", 2.0)["tree"]["children"][0]["state"] == "restarting"
        assert time.monotonic() - start < 1.0
    finally:
        stream.close()


def test_the_history_is_the_tail_of_the_log_file(tmp_path: Any) -> None:
    from mycelium.operator.dashboard.feed import read_tail

    log = tmp_path / "supervision.jsonl"
    lines = [orjson.dumps({"event": "started", "child": f"c{i}"}) for i in range(100)]
    log.write_bytes(b"\n".join(lines) + b"\nnot json\n")
    assert [r["child"] for r in read_tail(log)] == [f"c{i}" for i in range(100)]
    tail = read_tail(log, limit=200)  # the first, cut line is dropped
    assert tail and tail[-1]["child"] == "c99" and len(tail) < 100
    assert all(r["event"] == "started" for r in tail)
    assert read_tail(tmp_path / "missing.jsonl") == [] and read_tail(None) == []
