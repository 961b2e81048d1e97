"""Flow D under a steady load through the edge: blue/green on 3 nodes, rollback, stubborn blues,
a new plan superseding a running rollout. Every scenario must cost 0 failed requests."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from pathlib import Path

import orjson
import pytest
from load import Load
from mesh_helpers import MeshProcess, cli, wait_until, workload_pids

SLOW = "/web/slow?delay=2"


def _get(port: int, path: str) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    started = time.monotonic()
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return {**orjson.loads(resp.read()), "took": time.monotonic() - started}
    finally:
        conn.close()


def _deploy(mesh: MeshProcess, digest: str, *extra: str) -> tuple[int, str, str]:
    result = cli(mesh.home, "deploy", "web", digest, "--max", "3", *extra, timeout=90)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.timeout(120)
def test_blue_green_then_rollback_under_load_fail_no_request(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    code, _, err = _deploy(mesh, digests["v1"])
    assert code == 0, err
    blues = {i["pid"] for i in mesh.ready("web", 3)}
    slow: list[dict[str, object]] = []
    with Load(mesh.port, "web") as load:
        load.wait_requests(50)
        # slow requests in flight on every blue when it drains: they finish on the blue
        slows = [threading.Thread(target=lambda: slow.append(_get(mesh.port, SLOW)))
                 for _ in range(6)]
        for t in slows:
            t.start()
        code, _, err = _deploy(mesh, digests["v2"], "--warmup", "0.3")
        assert code == 0, err
        done = time.monotonic()
        for t in slows:
            t.join(10)
        # answered by the blue it was sent to, not cut at SIGTERM and resent (that takes 2 x 2 s)
        assert [r["version"] for r in slow] == ["1"] * 6, slow
        assert all(float(str(r["took"])) < 3.0 for r in slow), slow
        # progress per node on stderr: every node launched, warmed and drained its blue
        for node in ("node-1", "node-2", "node-3"):
            for phase in ("launching", "healthy", "warming", "draining", "done"):
                assert f"{node}: {phase}" in err, err
        # [rollout] parallel = 1: a node launches its green only once the previous one's blue
        # left the routes (it drains; its requests in flight finish meanwhile)
        lines = err.splitlines()
        order = sorted(("node-1", "node-2", "node-3"),
                       key=lambda n: lines.index(f"web {n}: launching"))
        for first, second in itertools.pairwise(order):
            assert (lines.index(f"web {second}: launching")
                    > lines.index(f"web {first}: draining")), err
        load.wait_requests(100)
        stats = load.stats
        assert stats.failed == 0, stats.errors
        assert stats.versions["1"] > 0 and stats.versions["2"] > 0
        assert stats.last_seen["1"] <= done  # only the new version after the switch
        greens = mesh.ready("web", 3, digests["v2"])
        assert not blues & set(workload_pids(mesh.home))  # no old process left
        assert {i["digest"] for i in mesh.app("web")["instances"]} == {digests["v2"]}

        # a never-healthy green: rolled back, blue untouched, deploy --wait exits 1 and says why
        code, _, err = _deploy(mesh, digests["bad"], "--timeout", "1.5")
        assert code == 1
        assert "rolled back" in err and "not Ready within 1.5s" in err, err
        doc = wait_until(lambda: (d := mesh.app("web"))["state"] == "failed"
                         and all(i["digest"] == digests["v2"] for i in d["instances"]) and d,
                         20, "rollback")
        assert doc["digest"] == digests["v2"]
        assert {i["pid"] for i in doc["instances"]} == {g["pid"] for g in greens}
        load.wait_requests(50)
    assert load.stats.failed == 0, load.stats.errors
    assert "bad" not in load.stats.versions


@pytest.mark.timeout(90)
def test_a_blue_that_ignores_sigterm_is_killed_after_the_grace(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "web", digests["stubborn"]).returncode == 0
    (blue,) = mesh.ready("web", 1)
    with Load(mesh.port, "web") as load:
        load.wait_requests(30)
        started = time.monotonic()
        code, _, err = _deploy(mesh, digests["v1"], "--max", "1")
        took = time.monotonic() - started
        assert code == 0, err
        load.wait_requests(30)
    assert load.stats.failed == 0, load.stats.errors
    assert blue["pid"] not in workload_pids(mesh.home)
    assert took >= 2.0  # stop_grace = 2 s in the test config: SIGTERM was ignored
    assert [i["digest"] for i in mesh.app("web")["instances"]] == [digests["v1"]]


@pytest.mark.timeout(120)
def test_a_new_plan_mid_rollout_supersedes_the_old_one(
        mesh: MeshProcess, digests: dict[str, str], home: Path) -> None:
    assert _deploy(mesh, digests["v1"])[0] == 0
    mesh.ready("web", 3)
    with Load(mesh.port, "web") as load:
        load.wait_requests(30)
        result = cli(home, "deploy", "web", digests["v2"], "--max", "3", "--warmup", "2",
                     "--no-wait")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: any(i["digest"] == digests["v2"] and i["state"] == "Ready"
                               for i in mesh.app("web")["instances"]), 20, "a v2 green")
        code, _, err = _deploy(mesh, digests["v3"], "--warmup", "0.2")
        assert code == 0, err
        load.wait_requests(50)
    assert load.stats.failed == 0, load.stats.errors
    insts = mesh.app("web")["instances"]
    assert {i["digest"] for i in insts} == {digests["v3"]} and len(insts) == 3
    assert len(workload_pids(home)) == 3  # nothing stranded

    # scaling down drains too: requests in flight on the nodes that give their slot back finish
    slow: list[dict[str, object]] = []
    with Load(mesh.port, "web") as load:
        load.wait_requests(30)
        slows = [threading.Thread(target=lambda: slow.append(_get(mesh.port, SLOW)))
                 for _ in range(6)]
        for t in slows:
            t.start()
        wait_until(lambda: sum(1 for i in mesh.app("web")["instances"]
                               if i["state"] == "Ready") == 3, 5, "3 Ready")
        code, _, err = _deploy(mesh, digests["v3"], "--max", "1")
        assert code == 0, err
        for t in slows:
            t.join(10)
        wait_until(lambda: len(workload_pids(home)) == 1, 15, "one instance left")
        load.wait_requests(30)
    assert load.stats.failed == 0, load.stats.errors
    assert len(slow) == 6
    served_by = {str(r["instance"]).split("#")[0] for r in slow}
    assert served_by & {"web@node-2", "web@node-3"}, slow  # not cut and resent to node-1
