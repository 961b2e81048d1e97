"""The supervision log: JSON lines that rotate, read oldest first, follow live, one-line form."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from mycelium.home import Home
from mycelium.operator import LogError, SupervisionLog, format_record
from supervisors import Report

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def record(n: int, app: str | None = "hello", event: str = "child_terminated") -> dict[str, Any]:
    return {"event": event, "supervisor": "mesh/nodes/node-1/apps/hello",
            "child": f"hello@node-1#{n}", "app": app, "reason": "killed by SIGKILL", "n": n}


def test_a_record_is_one_json_line_with_the_spec_keys(tmp_path: Path) -> None:
    log = SupervisionLog(Home(tmp_path))
    log.write({"event": "started", "supervisor": "mesh", "ts": 1_800_000_000.25})
    log.write(record(1))
    lines = (tmp_path / "logs" / "supervision.jsonl").read_bytes().splitlines()
    assert len(lines) == 2
    first = orjson.loads(lines[0])
    assert first == {"event": "started", "supervisor": "mesh", "ts": "2027-01-15T08:00:00.250Z",
                     "app": None, "child": None, "reason": None, "delay": None}
    assert RFC3339.match(orjson.loads(lines[1])["ts"])
    log.close()


def test_a_supervisors_report_is_written_with_its_app_lifted_from_meta(tmp_path: Path) -> None:
    log = SupervisionLog(tmp_path)
    log.write(Report(ts=time.time(), event="backoff", supervisor="mesh/nodes/node-1/apps/hello",
                     child="hello@node-1#2", reason=None, delay=0.4,
                     extra={"app": "hello", "restarts": 2}))
    (rec,) = list(log.read())
    assert (rec["event"], rec["app"], rec["delay"], rec["extra"]["restarts"]) == (
        "backoff", "hello", 0.4, 2)
    assert RFC3339.match(rec["ts"])
    log.close()


def test_a_record_without_an_event_is_refused(tmp_path: Path) -> None:
    log = SupervisionLog(tmp_path)
    with pytest.raises(LogError, match="without an event"):
        log.write({"supervisor": "mesh"})
    with pytest.raises(LogError, match="rotate_bytes"):
        SupervisionLog(tmp_path, rotate_bytes=0)


def test_rotation_keeps_n_files_and_read_returns_oldest_first(tmp_path: Path) -> None:
    log = SupervisionLog(tmp_path, rotate_bytes=1024, keep=2)
    for n in range(60):
        log.write(record(n))
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert names == ["supervision.jsonl", "supervision.jsonl.1", "supervision.jsonl.2"]
    assert all(p.stat().st_size <= 1024 for p in (tmp_path / "logs").iterdir())
    seen = [r["n"] for r in log.read()]
    assert seen == sorted(seen) and seen[-1] == 59
    assert 0 < len(seen) < 60  # the oldest fell off the end
    log.close()


def test_keep_zero_keeps_only_the_current_file(tmp_path: Path) -> None:
    log = SupervisionLog(tmp_path, rotate_bytes=1024, keep=0)
    for n in range(30):
        log.write(record(n))
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["supervision.jsonl"]
    assert [r["n"] for r in log.read()][-1] == 29
    log.close()


def test_read_filters_by_app_and_skips_a_torn_line(tmp_path: Path) -> None:
    log = SupervisionLog(tmp_path)
    log.write(record(1, app="hello"))
    log.write(record(2, app=None, event="started"))
    log.write(record(3, app="world"))
    log.close()
    with open(tmp_path / "logs" / "supervision.jsonl", "ab") as fh:
        fh.write(b'{"event": "child_ter')
    assert [r["n"] for r in log.read()] == [1, 2, 3]
    assert [r["n"] for r in log.read(app="hello")] == [1]
    assert list(SupervisionLog(tmp_path / "empty").read()) == []


def test_the_log_survives_a_new_writer_on_the_same_home(tmp_path: Path) -> None:
    first = SupervisionLog(tmp_path)
    first.write(record(1))
    first.close()
    second = SupervisionLog(tmp_path)
    second.write(record(2))
    assert [r["n"] for r in second.read()] == [1, 2]
    second.close()


def test_writes_from_many_threads_never_interleave(tmp_path: Path) -> None:
    log = SupervisionLog(tmp_path, rotate_bytes=16 * 1024, keep=50)

    def burst(base: int) -> None:
        for n in range(base, base + 200):
            log.write(record(n))

    threads = [threading.Thread(target=burst, args=(k * 1000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(r["n"] for r in log.read()) == sorted(
        n for k in range(4) for n in range(k * 1000, k * 1000 + 200))
    log.close()


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[tuple[SupervisionLog, queue.Queue[dict[str, Any]],
                                             threading.Event]]:
    # keep enough files that a burst of writes cannot push unread records off the end
    log = SupervisionLog(tmp_path, rotate_bytes=1024, keep=50)
    log.write(record(0))
    got: queue.Queue[dict[str, Any]] = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        for rec in log.follow(app="hello", stop=stop, poll=0.01):
            got.put(rec)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield log, got, stop
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    log.close()


def test_follow_sees_history_then_new_records_across_rotations(
        follower: tuple[SupervisionLog, queue.Queue[dict[str, Any]], threading.Event]) -> None:
    log, got, _stop = follower
    assert got.get(timeout=5)["n"] == 0
    for n in range(1, 40):  # many rotations (about 150 bytes a record, 1 KiB a file)
        log.write(record(n))
        log.write(record(n, app="other"))
    seen = [got.get(timeout=5)["n"] for _ in range(1, 40)]
    assert seen == list(range(1, 40))


def test_follow_without_history_starts_at_the_end(tmp_path: Path) -> None:
    log = SupervisionLog(tmp_path)
    log.write(record(1))
    stop = threading.Event()
    stream = log.follow(stop=stop, history=False, poll=0.01)
    log.write(record(2))
    assert next(stream)["n"] == 2
    stop.set()
    assert list(stream) == []
    log.close()


def test_format_record_is_one_short_line_with_the_facts() -> None:
    line = format_record({"ts": "2026-11-27T02:41:07.123Z", "event": "child_terminated",
                          "supervisor": "mesh/nodes/node-1/apps/hello",
                          "child": "hello@node-1#3", "app": "hello",
                          "reason": "killed by SIGKILL", "extra": {"pid": 4242, "restarts": 2}},
                         color=False)
    assert "\n" not in line and "\x1b" not in line
    assert re.match(r"^\d\d:\d\d:\d\d\.123 mesh/nodes/node-1/apps/hello child_terminated "
                    r'hello@node-1#3 app=hello reason="killed by SIGKILL" pid=4242 restarts=2$',
                    line), line


def test_format_record_shows_the_backoff_delay_and_colours_on_request() -> None:
    rec = {"ts": "2026-11-27T02:41:07.123Z", "event": "backoff", "supervisor": "mesh/apps",
           "child": "hello", "app": None, "reason": None, "delay": 0.4}
    plain = format_record(rec, color=False)
    assert plain.endswith("mesh/apps backoff hello delay=0.400s")
    colored = format_record(rec, color=True)
    assert "\x1b[" in colored
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == plain
    crash = format_record({**rec, "event": "child_terminated", "reason": "exit code 1"}, True)
    assert "\x1b[31mreason=\"exit code 1\"" in crash


def test_format_record_copes_with_a_sparse_record() -> None:
    assert format_record({"event": "shutdown", "ts": "garbage"}) == "garbage - shutdown"


def test_follow_waits_for_a_log_that_does_not_exist_yet(tmp_path: Path) -> None:
    reader = SupervisionLog(tmp_path)
    stop = threading.Event()
    stream = reader.follow(stop=stop, poll=0.01)
    got: queue.Queue[dict[str, Any]] = queue.Queue()
    thread = threading.Thread(target=lambda: [got.put(r) for r in stream], daemon=True)
    thread.start()
    writer = SupervisionLog(tmp_path)  # e.g. the mesh starting after `mycelium logs -f`
    writer.write(record(7))
    assert got.get(timeout=5)["n"] == 7
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    writer.close()
