"""The access log: one JSON object per answered request, from the fast and the slow path."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from edge_helpers import dead_url, table
from edge_mesh import ENV

from mycelium.edge.accesslog import FIELDS, AccessLog, access_record, format_access, in_time_order

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def entries(home: Path) -> list[dict[str, Any]]:
    path = home / "logs" / "access.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_entries(home: Path, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(got := entries(home)) < count:
        assert time.monotonic() < deadline, f"{len(got)} of {count} access log entries: {got}"
        time.sleep(0.02)  # polls a condition with a deadline
    return got


def exchange(conn: http.client.HTTPConnection, method: str, path: str,
             body: bytes | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers={"Host": "shop.example"})
    resp = conn.getresponse()
    return resp.status, resp.read()


@pytest.mark.timeout(30)
def test_fast_and_slow_path_requests_and_the_edges_own_answers_are_logged(
        upstreams, edges, tmp_path):
    up = upstreams()
    edge = edges(table(hello=[up.url]), access_log_home=tmp_path)
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        answers = [
            exchange(conn, "GET", "/hello/first?q=1"),        # slow path: nothing pooled yet
            exchange(conn, "GET", "/hello/second?q=2&r=3"),   # fast path: a pooled upstream
            exchange(conn, "POST", "/hello/upload", b"x" * 5000),  # slow path: a body
            exchange(conn, "GET", "/nope/"),                  # the edge's 404
            exchange(conn, "GET", "/_mycelium/health"),       # the edge's own path
        ]
    finally:
        conn.close()
    got = wait_entries(tmp_path, 5)
    assert [tuple(e) for e in got] == [FIELDS] * 5
    for entry, (status, body) in zip(got, answers, strict=True):
        assert RFC3339.match(entry["ts"]), entry
        assert entry["client"] == "127.0.0.1"
        assert entry["host"] == "shop.example"
        assert entry["status"] == status
        assert entry["bytes"] == len(body)
        assert entry["ms"] >= 0
        assert entry["retries"] == 0
    assert [(e["method"], e["path"]) for e in got] == [
        ("GET", "/hello/first?q=1"), ("GET", "/hello/second?q=2&r=3"),
        ("POST", "/hello/upload"), ("GET", "/nope/"), ("GET", "/_mycelium/health")]
    assert [e["app"] for e in got] == ["hello", "hello", "hello", None, None]
    assert [e["instance"] for e in got] == ["hello#0", "hello#0", "hello#0", None, None]
    assert [e["status"] for e in got] == [200, 200, 200, 404, 200]


@pytest.mark.timeout(30)
def test_a_retry_and_an_unreachable_app_are_logged_with_their_counts(upstreams, edges,
                                                                      tmp_path):
    up = upstreams()
    edge = edges(table(hello=[dead_url(), up.url], gone=[dead_url()]), access_log_home=tmp_path)
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        assert exchange(conn, "GET", "/hello/")[0] == 200
        assert exchange(conn, "GET", "/gone/")[0] == 502
    finally:
        conn.close()
    hello, gone = wait_entries(tmp_path, 2)
    assert (hello["app"], hello["instance"], hello["retries"]) == ("hello", "hello#1", 1)
    assert (gone["app"], gone["instance"], gone["status"]) == ("gone", "gone#0", 502)


@pytest.mark.timeout(30)
def test_streamed_answers_count_their_body_bytes(upstreams, edges, tmp_path):
    from aiohttp import web

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(3):
            await resp.write(b"y" * 1000)
        await resp.write_eof()
        return resp

    from edge_helpers import echo_app

    up = upstreams(echo_app(stream=stream))
    edge = edges(table(hello=[up.url]), access_log_home=tmp_path)
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        first = exchange(conn, "GET", "/hello/stream")
        second = exchange(conn, "GET", "/hello/stream")  # fast path, handed to a task
    finally:
        conn.close()
    assert first == second == (200, b"y" * 3000)
    got = wait_entries(tmp_path, 2)
    # the body as sent: three chunks framed "3e8\r\n…\r\n" and the last "0\r\n\r\n" (as nginx's
    # $body_bytes_sent counts)
    assert [(e["status"], e["bytes"]) for e in got] == [(200, 3000 + 3 * 7 + 5)] * 2


def test_records_and_their_human_form_hold_every_field(tmp_path):
    log = AccessLog(tmp_path, 1024 * 1024, 2)
    log.add("10.0.0.1", "GET", b"a.example", "/x/y?z", 201, 12, 3.25, "x", "x@node-1:ab", 2)
    log.close()
    (record,) = entries(tmp_path)
    assert record == access_record((0.0, "10.0.0.1", "GET", b"a.example", "/x/y?z", 201, 12,
                                    3.25, "x", "x@node-1:ab", 2)) | {"ts": record["ts"]}
    line = format_access(record)
    for text in ("10.0.0.1", "GET", "a.example", "/x/y?z", "201", "12B", "3.25ms", "x@node-1:ab",
                 "retries=2"):
        assert text in line


def test_the_access_log_rotates_like_the_supervision_log(tmp_path):
    log = AccessLog(tmp_path, 2048, 2)
    for n in range(200):
        log.add("127.0.0.1", "GET", None, f"/a/{n}", 200, 0, 1.0, "a", None, 0)
        log.flush()
    log.close()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["access.jsonl", "access.jsonl.1", "access.jsonl.2"]
    assert all(p.stat().st_size <= 2048 for p in (tmp_path / "logs").iterdir())


@pytest.mark.timeout(60)
def test_logs_access_reads_the_log_filtered_by_app_as_json_and_as_lines(tmp_path):
    log = AccessLog(tmp_path, 1024 * 1024, 2)
    log.add("127.0.0.1", "GET", b"h", "/a/1", 200, 5, 1.0, "a", "a#1", 0)
    log.add("127.0.0.1", "GET", b"h", "/b/1", 503, 40, 0.5, "b", None, 0)
    log.close()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mycelium", "logs", "--access", *args,
                               "--home", str(tmp_path)], capture_output=True, text=True,
                              env=ENV, timeout=30, check=False)

    as_json = run("--json", "--app", "b")
    assert as_json.returncode == 0, as_json.stderr
    (only,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert (only["app"], only["path"], only["status"]) == ("b", "/b/1", 503)
    human = run()
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert len(lines) == 2 and "/a/1 200 5B" in lines[0] and "/b/1 503 40B" in lines[1]


def test_interleaved_batches_are_read_back_in_time_order():
    records = [{"ts": f"2026-01-01T00:00:0{s}.000Z", "n": s} for s in (0, 3, 1, 4, 2, 5)]
    assert [r["n"] for r in in_time_order(records, window=3)] == [0, 1, 2, 3, 4, 5]
    assert list(in_time_order([])) == []
