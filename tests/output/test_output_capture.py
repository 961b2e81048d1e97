"""Capture without a mesh: real workload processes writing into their output files while the
watcher indexes and rotates them; nothing lost, in order, within the retention."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mycelium.node.inotify import open_inotify
from mycelium.node.output import Capture, OutputPolicy, prune_instances, read_last_exit
from mycelium.node.process import Workload, spawn
from mycelium.operator.output import Follower, OutputLine, kept_instances, read_output
from mycelium.output_files import Stream

WRITER = """
import sys, time
out = sys.stdout.buffer
n = int(sys.argv[1])
for start in range(0, n, 500):
    out.write(b"".join(b"line %d yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\\n" % i
                       for i in range(start, min(n, start + 500))))
    out.flush()
    time.sleep(0.0005)
sys.stderr.write("".join(f"err {i}\\n" for i in range(int(sys.argv[2]))))
"""


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "instances"
    path.mkdir()
    yield path


def start(instances: Path, serial: int, policy: OutputPolicy, lines: int,
          errors: int = 0) -> tuple[Capture, Workload]:
    directory = instances / f"app@node-1#{serial}"
    (directory / "app").mkdir(parents=True)
    capture = Capture(directory, {"instance": directory.name, "app": "app", "node": "node-1",
                                  "run": 1}, policy)
    workload = spawn([sys.executable, "-c", WRITER, str(lines), str(errors)],
                     cwd=directory / "app", env={}, log_path=(capture.paths[0], capture.paths[1]))
    return capture, workload


def numbers(lines: list[OutputLine]) -> list[int]:
    return [int(line.line.split()[1]) for line in lines if line.stream == "stdout"]


def test_rotation_under_writes_loses_nothing_and_keeps_order(instances: Path) -> None:
    policy = OutputPolicy(max_bytes=64 * 1024, files=1000, keep=5, interval=0.005)
    capture, workload = start(instances, 1, policy, 100_000, errors=3)
    follower = Follower(instances, "app", None, ("stdout", "stderr"), [],
                        kept_instances(instances, "app"), {})
    followed: list[OutputLine] = []
    try:
        while workload.wait(0.01) is None:
            followed += follower.poll()  # reads race with rotations: never a torn read
    finally:
        workload.terminate(1.0)
    capture.close("exit code 0")
    followed += follower.poll()
    stream = Stream(capture.directory, "stdout")
    assert len(stream.segments()) > 20  # it did rotate, many times, while being written
    assert stream.live.stat().st_size < 2 * policy.max_bytes
    everything = read_output(kept_instances(instances, "app"))
    assert numbers(everything) == list(range(100_000))
    assert numbers(followed) == list(range(100_000))
    assert [line.ts for line in everything] == sorted(line.ts for line in everything)
    assert abs(everything[-1].ts - time.time()) < 30
    exit_ = read_last_exit(instances, "app@node-1#1")
    assert exit_ is not None and exit_.output_tail == ("err 0", "err 1", "err 2")


def test_retention_keeps_the_newest_files_per_stream(instances: Path) -> None:
    policy = OutputPolicy(max_bytes=64 * 1024, files=3, keep=5, interval=0.005)
    capture, workload = start(instances, 1, policy, 50_000)
    try:
        assert workload.wait(30) == 0
    finally:
        workload.terminate(1.0)
    capture.close("exit code 0")
    stream = Stream(capture.directory, "stdout")
    assert len(stream.segments()) <= 2
    on_disk = sum(p.stat().st_size for _s, p in stream.segments()) + stream.live.stat().st_size
    assert on_disk <= 3 * policy.max_bytes + 4096
    kept = numbers(read_output(kept_instances(instances, "app")))
    assert kept == list(range(kept[0], 50_000)) and len(kept) > 2000
    exit_ = read_last_exit(instances, "app@node-1#1")
    assert exit_ is not None  # no stderr: the tail comes from stdout
    assert exit_.output_tail[-1].startswith("line 49999 ") and len(exit_.output_tail) == 10


def test_tail_reads_backwards_not_everything(instances: Path) -> None:
    capture, workload = start(instances, 1, OutputPolicy(interval=0.005), 30_000)
    assert workload.wait(30) == 0
    capture.close("exit code 0")
    tail = read_output(kept_instances(instances, "app"), tail=3)
    assert numbers(tail) == [29_997, 29_998, 29_999]


def test_only_the_last_keep_instances_are_kept(instances: Path) -> None:
    policy = OutputPolicy(keep=2, interval=0.005)
    for serial in (1, 2, 3):
        capture, workload = start(instances, serial, policy, 10)
        assert workload.wait(30) == 0
        capture.close("exit code 0")
    deadline = time.monotonic() + 10  # the watcher prunes once the burst's second is over
    while [k.serial for k in kept_instances(instances, "app")] != [2, 3] \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [k.serial for k in kept_instances(instances, "app")] == [2, 3]
    assert prune_instances(instances, "app", "node-1", 1) == ["app@node-1#2"]


def test_a_blue_that_ends_after_its_green_started_is_pruned_once_it_ended(
        instances: Path) -> None:
    policy = OutputPolicy(keep=1, interval=0.005)
    blue, blue_workload = start(instances, 1, policy, 10)
    green, green_workload = start(instances, 2, policy, 10)  # blue still running: kept
    assert green_workload.wait(30) == 0 and blue_workload.wait(30) == 0
    green.close("exit code 0")
    blue.close("exit code 0")  # its end, not a later start, lets it go
    deadline = time.monotonic() + 10
    while [k.serial for k in kept_instances(instances, "app")] != [2] \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [k.serial for k in kept_instances(instances, "app")] == [2]


def test_inotify_names_exactly_the_files_written_since_the_last_drain(tmp_path: Path) -> None:
    notify = open_inotify()
    assert notify is not None  # Linux
    try:
        quiet, busy = tmp_path / "quiet", tmp_path / "busy"
        quiet.touch()
        busy.touch()
        wq, wb = notify.watch(quiet), notify.watch(busy)
        assert notify.changed() == set()
        with open(busy, "ab") as fh:
            fh.write(b"x\n")  # the event is queued before write() returns
        assert notify.changed() == {wb}
        assert notify.changed() == set()
        notify.unwatch(wq)
        with open(quiet, "ab") as fh:
            fh.write(b"y\n")
        assert notify.changed() == set()
    finally:
        notify.close()


def test_the_workload_never_blocks_without_a_reader(instances: Path) -> None:
    """No mesh reads while it writes (as after a kill -9 of the mesh): it still runs through."""
    directory = instances / "app@node-1#1"
    (directory / "app").mkdir(parents=True)
    out, err = directory / "stdout", directory / "stderr"
    workload = spawn([sys.executable, "-c", WRITER, "200000", "1"], cwd=directory / "app",
                     env={}, log_path=(out, err))
    assert workload.wait(60) == 0  # 8 MB, far more than a pipe buffer holds
    assert out.read_bytes().count(b"\n") == 200_000
    assert os.stat(err).st_size == len("err 0\n")
