"""Crash loops beside a healthy app: growing backoff, ``crashloop`` in status, no lost requests
for the healthy app, and ``stop`` during a backoff leaves nothing to respawn."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from load import Load
from mesh_helpers import MeshProcess, cli, wait_until, workload_pids


def _records(home: Path, app: str) -> list[dict[str, Any]]:
    out = cli(home, "logs", "--json", "--app", app).stdout
    return [orjson.loads(line) for line in out.splitlines()]


@pytest.mark.timeout(90)
def test_a_crash_loop_backs_off_and_never_disturbs_a_healthy_app_and_stop_ends_it(
        mesh: MeshProcess, digests: dict[str, str], home: Path) -> None:
    assert cli(home, "deploy", "steady", digests["steady"], "--max", "3").returncode == 0
    steady = {i["pid"] for i in mesh.ready("steady", 3)}
    with Load(mesh.port, "steady") as load:
        load.wait_requests(30)
        result = cli(home, "deploy", "crashy", digests["crashy"], "--no-wait")
        assert result.returncode == 0, result.stderr
        # a slow starter (3 s) beside them is not killed before its startup deadline (30 s)
        result = cli(home, "deploy", "slow", digests["slow"], "--no-wait")
        assert result.returncode == 0, result.stderr

        def backoffs() -> list[float] | None:
            delays = [float(r["delay"]) for r in _records(home, "crashy")
                      if r["event"] == "backoff"]
            return delays if len(delays) >= 5 else None

        delays = wait_until(backoffs, 30, "5 backoff records")
        # 0.1 s doubling (±10 % jitter): the restarts grow apart
        assert all(b > a for a, b in itertools.pairwise(delays[:5])), delays
        assert delays[4] >= 0.1 * 2 ** 4 * 0.85, delays
        assert wait_until(lambda: mesh.app("crashy")["state"] == "crashloop", 10, "crashloop")

        # stop while the slot waits out a backoff: nothing respawns afterwards
        last = _records(home, "crashy")[-1]
        stopped = cli(home, "stop", "crashy")
        assert stopped.returncode == 0, stopped.stderr
        seen = len(_records(home, "crashy"))
        wait_until(lambda: not mesh.status("crashy")["apps"], 10, "crashy gone from status")
        horizon = time.monotonic() + min(float(last.get("delay") or 0.5), 3.0) + 0.5
        while time.monotonic() < horizon:  # watch past the pending backoff: no new start
            assert not [r for r in _records(home, "crashy")[seen:] if r["event"] == "started"]
            time.sleep(0.1)
        load.wait_requests(30)
    assert load.stats.failed == 0, load.stats.errors
    assert {i["pid"] for i in mesh.ready("steady", 3)} == steady
    (slow,) = mesh.ready("slow", 1)
    assert slow["restarts"] == 0 and slow["ready_at"] - slow["started_at"] >= 2.9, slow
    assert set(workload_pids(home)) == steady | {slow["pid"]}
