"""Pure parts of workload output: --since, which instances are current, what a command line
names, line splitting, the index clock, instance serials."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.errors import BadInput
from mycelium.node.serials import begin_run, next_serial
from mycelium.operator.output import Kept, current, parse_since, select
from mycelium.output_files import (
    INDEX_RECORD,
    Clock,
    Stream,
    parse_instance_dir,
    rfc3339,
    split_lines,
)

NOW = 1_800_000_000.0


def kept(serial: int, node: str = "node-1", run: int = 1, ended: dict | None = None) -> Kept:
    return Kept(f"app@{node}#{serial}", "app", node, serial, run, Path("/nowhere"), ended)


@pytest.mark.parametrize(("text", "expected"), [
    ("10m", NOW - 600), ("30s", NOW - 30), ("2h", NOW - 7200), ("1.5s", NOW - 1.5),
    ("2027-01-15T08:00:00Z", NOW), ("2027-01-15T09:00:00+01:00", NOW),
    ("2027-01-15T08:00:10.5Z", NOW + 10.5),
])
def test_since_takes_durations_and_rfc3339(text: str, expected: float) -> None:
    assert parse_since(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "10", "-5m", "10d", "", "m10", "2027-13-01"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(BadInput, match="--since"):
        parse_since(text, NOW)


def test_current_are_the_running_ones() -> None:
    old = kept(1, ended={"reason": "exit code 3"})
    assert current([old, kept(2), kept(3, "node-2")]) == [kept(2), kept(3, "node-2")]


def test_after_down_current_are_those_the_last_run_stopped() -> None:
    down = {"reason": "shutdown", "shutdown": True}
    earlier, crashed = kept(1, run=1, ended=down), kept(2, run=2, ended={"reason": "x"})
    last = [kept(3, run=2, ended=down), kept(4, "node-2", run=2, ended=down)]
    assert current([earlier, crashed, *last]) == last


def test_without_a_down_current_is_the_newest_per_node() -> None:
    dead = {"reason": "exit code 1"}
    kept_ = [kept(1, ended=dead), kept(2, ended=dead), kept(3, "node-2", ended=dead)]
    assert current(kept_) == [kept_[1], kept_[2]]


def test_select_names_unknown_things() -> None:
    kept_ = [kept(1, ended={"reason": "x"}), kept(2)]
    assert select(kept_, "app", None, None) == [kept(2)]
    assert select(kept_, "app", None, "app@node-1#1") == [kept_[0]]
    with pytest.raises(BadInput, match="unknown app"):
        select([], "app", None, None)
    with pytest.raises(BadInput, match="unknown instance"):
        select(kept_, "app", None, "app@node-1#9")
    with pytest.raises(BadInput, match="node-7"):
        select(kept_, "app", "node-7", None)


@given(st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b), max_size=20),
       st.booleans())
def test_split_lines_gives_back_every_line_and_its_end(texts: list[bytes], cut: bool) -> None:
    data = b"".join(t + b"\n" for t in texts) + (b"tail" if cut else b"")
    lines = split_lines(data, 100, partial=True)
    assert [line.text for line in lines] == texts + ([b"tail"] if cut else [])
    assert [line.end for line in lines][-1:] == ([100 + len(data)] if lines else [])
    assert all(line.partial == (cut and i == len(texts)) for i, line in enumerate(lines))


def test_clock_interpolates_within_each_record(tmp_path: Path) -> None:
    stream = Stream(tmp_path, "stdout")
    stream.live.write_bytes(b"a\nb\nc\nd\nee\n")
    os.utime(stream.live, (40.0, 40.0))
    stream.index_path.write_bytes(INDEX_RECORD.pack(0, 4, 10.0, 12.0)
                                  + INDEX_RECORD.pack(4, 8, 20.0, 30.0))
    clock = Clock(stream)
    assert clock.times([2, 4, 6, 8, 11]) == [11.0, 12.0, 25.0, 30.0, 40.0]
    assert clock.offset_since(15.0) == 4
    assert clock.offset_since(5.0) == 0
    assert clock.offset_since(35.0) == 8


def test_serials_are_never_reused_across_runs(tmp_path: Path) -> None:
    (tmp_path / "app@node-1#7").mkdir()  # a home from before serials were kept
    begin_run(tmp_path)
    first = [next_serial(tmp_path) for _ in range(5)]
    begin_run(tmp_path)  # the next `up`, e.g. after a kill -9 mid-block
    second = [next_serial(tmp_path) for _ in range(5)]
    assert min(first) > 7
    assert len(set(first + second)) == 10 and min(second) > max(first)


def test_instance_dirs_parse() -> None:
    assert parse_instance_dir("hello@node-1#12") == ("hello", "node-1", 12)
    assert parse_instance_dir("host-a-2") is None
    assert rfc3339(0.25) == "1970-01-01T00:00:00.250Z"


@given(st.lists(st.tuples(st.integers(1, 50), st.floats(0, 5), st.floats(0, 5)), min_size=1,
                max_size=8), st.data())
def test_clock_times_are_monotone_and_within_their_records(
        batches: list[tuple[int, float, float]], data: st.DataObject) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        stream = Stream(Path(tmp), "stdout")
        records, end, now = [], 0, 100.0
        for size, idle, busy in batches:  # a look at `now`, then bytes written within `busy`
            records.append((end, end + size, now, now + busy))
            end, now = end + size, now + busy + idle
        stream.live.write_bytes(b"x" * end)
        os.utime(stream.live, (now, now))
        stream.index_path.write_bytes(b"".join(INDEX_RECORD.pack(*r) for r in records))
        ends = sorted(data.draw(st.lists(st.integers(1, end), min_size=1, unique=True)))
        times = Clock(stream).times(ends)
        assert times == sorted(times)
        for e, t in zip(ends, times, strict=True):
            _start, _stop, lo, hi = next(r for r in records if r[1] >= e)
            assert lo <= t <= hi


def test_an_exit_tail_shows_under_its_log_line() -> None:
    from mycelium.operator.logs import format_record

    record = {"ts": "2026-12-06T20:45:33.098Z", "event": "child_terminated",
              "supervisor": "mesh/nodes/node-1/apps/crashy", "child": "crashy@node-1:abc",
              "app": "crashy", "reason": "exit code 3",
              "extra": {"output_tail": ["last words", "\x1b[31mred"]}}
    lines = format_record(record).split("\n")
    assert "child_terminated" in lines[0] and 'reason="exit code 3"' in lines[0]
    assert lines[1:] == ["    | last words", "    | \\x1b[31mred"]
    assert "\n" not in format_record({**record, "event": "started"})


def test_a_prune_wish_wakes_the_watcher_only_when_new_and_due(tmp_path: Path) -> None:
    from mycelium.node.retention import Prunes

    prunes = Prunes()
    key = (tmp_path, "web", "node-1")
    assert prunes.want(key, 3)  # new, never run: wake the watcher
    assert not prunes.want(key, 3)  # already noted: the pass that runs the first runs it
    assert prunes.want((tmp_path, "api", "node-1"), 3)  # another app's is its own
    prunes.run_due()  # nothing to prune in an empty directory; both ran just now
    assert not prunes.want(key, 3)  # inside its second: a later pass runs it
