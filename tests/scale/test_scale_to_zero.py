"""Scale to zero end to end: nothing runs at deploy, the edge holds requests while ONE
instance starts, the last instance stops once idle, and the hold is bounded."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mesh_helpers import MeshProcess, cli, wait_until


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def started_ids(home: Path, app: str) -> set[str]:
    ids = set()
    for line in (home / "logs" / "supervision.jsonl").read_text().splitlines():
        rec = json.loads(line)
        child = rec.get("child") or ""
        if rec.get("app") == app and rec.get("event") == "started" and "@" in child:
            ids.add(child)  # an instance child (the app supervisor's is the app's name)
    return ids


@pytest.mark.timeout(120)
def test_idle_at_deploy_one_start_for_a_burst_then_idle_again(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    begun = time.monotonic()
    result = cli(mesh.home, "deploy", "hello", digests["hello"], "--min", "0", "--max", "1",
                 "--idle", "1.5")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - begun < 10
    app = mesh.app("hello")
    assert app["state"] == "idle" and app["instances"] == [] and app["desired"] == 0
    assert app["desired_reason"].startswith("idle")

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(fetch, [f"{mesh.url}/hello/"] * 20))
    assert [status for status, _ in answers] == [200] * 20
    assert len({json.loads(body)["instance"] for _, body in answers}) == 1
    assert len(started_ids(mesh.home, "hello")) == 1  # ONE start for the whole burst

    wait_until(lambda: mesh.app("hello")["state"] == "idle"
               and not mesh.app("hello")["instances"], 30, "idle again")
    logs = cli(mesh.home, "logs", "--app", "hello", "--json").stdout
    assert '"event":"scaled"' in logs.replace(" ", "")
    status, _ = fetch(f"{mesh.url}/hello/")  # and it wakes again
    assert status == 200


@pytest.mark.timeout(120)
def test_the_hold_is_bounded_in_time_and_in_number(home: Path,
                                                    digests: dict[str, str]) -> None:
    (home / "mycelium.toml").write_text("[edge]\nhold_timeout = 1.0\nhold_max = 2\n")
    mesh = MeshProcess(home)
    try:
        assert cli(home, "deploy", "sleepy", digests["sleepy"], "--min", "0").returncode == 0
        with ThreadPoolExecutor(3) as pool:
            first = [pool.submit(fetch, f"{mesh.url}/sleepy/") for _ in range(2)]
            wait_until(lambda: mesh.app("sleepy")["instances"], 10, "the wake")
            third = fetch(f"{mesh.url}/sleepy/")
            assert third[0] == 503 and b"too many requests waiting" in third[1]
            for future in first:
                status, body = future.result()
                assert status == 504
                assert json.loads(body)["error"].startswith("app 'sleepy' is waking up")
    finally:
        assert cli(home, "stop", "sleepy").returncode == 0
        mesh.stop()
