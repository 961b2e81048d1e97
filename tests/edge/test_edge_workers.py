"""Edge worker processes: one port shared with SO_REUSEPORT, fed snapshots, restarted."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from edge_helpers import table
from edge_mesh import EdgeMesh, cli, wait_until

from mycelium.edge import EdgeConfig, Route, RouteTable
from mycelium.edge.metrics import EdgeMetrics, combine, counters_only
from mycelium.edge.worker import (
    config_from_wire,
    config_to_wire,
    routes_from_wire,
    routes_to_wire,
)
from mycelium.edge.workers import EdgeWorkers, restart_delay
from supervisors.reports import Report
from tests.meshkit import stopped_cleanly


def get(port: int, path: str = "/hello/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def reports() -> list[Report]:
    return []


@pytest.fixture
def workers(reports: list[Report]) -> Iterator[EdgeWorkers]:
    pool = EdgeWorkers(EdgeConfig(port=0, edge_id="edge-test", workers=2), reports.append)
    pool.start()
    yield pool
    pids = [w["pid"] for w in pool.describe()]
    pool.stop(grace=2.0)
    assert not [p for p in pids if psutil.pid_exists(p) and
                psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_config_and_routes_survive_the_wire(tmp_path: Path):
    config = EdgeConfig(port=0, access_log_home=tmp_path, eject_after=3, workers=2)
    assert config_from_wire(config_to_wire(config)) == config
    routes = table(hello=["http://127.0.0.1:1", "http://127.0.0.1:2"], other=[])
    assert routes_from_wire(routes_to_wire(routes)) == routes
    asleep = RouteTable({**routes, "idle": Route("idle", (), hold=True)})  # scaled to zero
    assert routes_from_wire(routes_to_wire(asleep)) == asleep


def test_restart_delays_grow_and_are_capped():
    assert [restart_delay(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    assert restart_delay(100) == 5.0


@pytest.mark.timeout(60)
def test_two_workers_share_the_port_and_serve_the_latest_snapshot(upstreams, workers):
    up = upstreams()
    assert get(workers.port)[0] == 404  # no routes yet: every worker answers on its own
    version = workers.set_routes(table(hello=[up.url]))
    assert workers.wait_applied(version, timeout=10.0)
    assert {w["routes_version"] for w in workers.describe()} == {version}
    statuses = [get(workers.port)[0] for _ in range(40)]
    assert statuses == [200] * 40
    pids = {w["pid"] for w in workers.describe()}
    assert len(pids) == 2 and os.getpid() not in pids


@pytest.mark.timeout(60)
def test_a_killed_worker_is_restarted_with_the_routes_and_the_other_keeps_serving(
        upstreams, workers, reports):
    up = upstreams()
    workers.wait_applied(workers.set_routes(table(hello=[up.url])), timeout=10.0)
    victim = workers.kill_one(signal.SIGKILL)
    failures: list[int | str] = []
    stop = threading.Event()

    def load() -> None:  # meanwhile, new connections keep being served by the survivor
        while not stop.is_set():
            try:
                status: int | str = get(workers.port)[0]
            except OSError as exc:
                status = f"{exc!r} at {time.monotonic()}"
            if status != 200:
                failures.append(status)

    loader = threading.Thread(target=load)
    # once its death was seen (and its queue reset with it), new connections meet the other
    wait_until(lambda: any(r.event == "child_terminated" for r in reports), 10, "the victim gone")
    loader.start()
    try:
        wait_until(lambda: all(w["status"] == "running" and w["pid"] != victim
                               for w in workers.describe()), 20, "the worker restarted")
        assert workers.wait_applied(1, timeout=10.0)  # the new one got the snapshot
    finally:
        stop.set()
        loader.join(10)
    assert failures == [], (failures, [(r.event, r.ts) for r in reports], time.time(),
                            time.monotonic())
    assert get(workers.port)[0] == 200
    events = [(r.event, r.child, r.reason) for r in reports]
    assert ("child_terminated", "worker-1", "killed by SIGKILL") in events
    assert ("child_restarted", "worker-1", "killed by SIGKILL") in events
    assert [w["restarts"] for w in workers.describe()] == [1, 0]


@pytest.mark.timeout(180)
def test_a_mesh_with_edge_workers_serves_shows_them_in_the_tree_and_kill_edge_heals(
        mesh_home: Path, hello_spores: tuple[Path, dict[str, str]]) -> None:
    (mesh_home / "mycelium.toml").write_text("[edge]\nworkers = 2\n")
    mesh = EdgeMesh(mesh_home, nodes=1)
    with stopped_cleanly(mesh, mesh_home):
        deployed = cli(mesh_home, "deploy", "hello", hello_spores[1]["hello"])
        assert deployed.returncode == 0, deployed.stderr
        mesh.ready("hello", 1)
        wait_until(lambda: get(mesh.port)[0] == 200, 10, "hello served by the workers")

        def edge_node() -> dict:  # type: ignore[type-arg]
            tree = mesh.client.request("tree")
            return next(c for c in tree["children"] if c["id"] == "edge")

        workers = edge_node()["children"]
        assert [(w["id"], w["type"], w["status"]) for w in workers] == [
            ("worker-1", "worker", "running"), ("worker-2", "worker", "running")]
        killed = cli(mesh_home, "kill", "--edge")
        assert killed.returncode == 0, killed.stderr
        pid = int(killed.stdout.split()[0])
        assert pid in {w["pid"] for w in workers}
        wait_until(lambda: all(w["status"] == "running" and w["pid"] != pid
                               for w in edge_node()["children"]), 30, "the worker restarted")
        assert [w["restarts"] for w in edge_node()["children"]].count(1) == 1
        statuses = [get(mesh.port)[0] for _ in range(20)]
        assert statuses == [200] * 20
        mesh.wait_line("child_restarted worker-", 10)
        worker_pids = [w["pid"] for w in edge_node()["children"]]
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) for p in worker_pids):  # `down` leaves no worker behind
        assert time.monotonic() < deadline, "edge workers survived the mesh"
        time.sleep(0.05)  # polls a condition with a deadline


def test_metrics_snapshots_add_up_and_render_with_the_peers():
    a, b = EdgeMetrics(), EdgeMetrics()
    a.request("hello", 200)
    a.observe("hello", 0.002)
    b.request("hello", 200)
    b.request("hello", 502)
    b.retry("hello")
    b.active = 3
    total = combine(a.snapshot(), b.snapshot())
    assert combine(total, b.snapshot(), -1) == combine(a.snapshot(), {})
    a.peers = b.snapshot()
    text = a.render()
    assert 'mycelium_edge_requests_total{app="hello",code="200"} 2' in text
    assert 'mycelium_edge_requests_total{app="hello",code="502"} 1' in text
    assert 'mycelium_edge_retries_total{app="hello"} 1' in text
    assert 'mycelium_edge_upstream_latency_seconds_count{app="hello"} 1' in text
    assert "mycelium_edge_active_requests 3" in text
    assert "active" not in counters_only(b.snapshot())


@pytest.mark.timeout(60)
def test_any_worker_shows_the_whole_edges_request_counts(upstreams, workers):
    up = upstreams()
    workers.wait_applied(workers.set_routes(table(hello=[up.url])), timeout=10.0)
    assert [get(workers.port)[0] for _ in range(40)] == [200] * 40  # spread over both

    def every_answer_counts_40() -> bool:
        texts = [get(workers.port, "/_mycelium/metrics")[1].decode() for _ in range(6)]
        return all('mycelium_edge_requests_total{app="hello",code="200"} 40' in t
                   for t in texts)

    wait_until(every_answer_counts_40, 20, "every worker showing all 40 requests")
    assert workers.metrics()["requests"]["hello\x00200"] == 40


@pytest.mark.timeout(60)
def test_the_workers_access_logs_land_in_the_one_file_the_edge_actor_writes(upstreams,
                                                                            tmp_path):
    up = upstreams()
    pool = EdgeWorkers(EdgeConfig(port=0, workers=2, access_log_home=tmp_path))
    pool.start()
    try:
        pool.wait_applied(pool.set_routes(table(hello=[up.url])), timeout=10.0)
        assert [get(pool.port, f"/hello/{n}")[0] for n in range(30)] == [200] * 30
        log = tmp_path / "logs" / "access.jsonl"

        def logged() -> list[dict]:  # type: ignore[type-arg]
            lines = log.read_text().splitlines() if log.exists() else []
            return [json.loads(line) for line in lines]

        wait_until(lambda: len(logged()) == 30, 20, "30 access log lines")
        assert sorted(e["path"] for e in logged()) == sorted(f"/hello/{n}" for n in range(30))
        assert {e["app"] for e in logged()} == {"hello"}
    finally:
        pool.stop(grace=2.0)


@pytest.mark.timeout(60)
def test_ejection_is_counted_once_for_all_workers_and_holds_in_every_worker(upstreams,
                                                                           reports):
    from aiohttp import web

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="broken")

    bad_app = web.Application()
    bad_app.router.add_route("*", "/{tail:.*}", broken)
    bad = upstreams(bad_app)
    good = upstreams()
    pool = EdgeWorkers(EdgeConfig(port=0, workers=2, eject_after=3, eject_time=1.0),
                       reports.append)
    pool.start()
    try:
        pool.wait_applied(pool.set_routes(table(hello=[good.url, bad.url, good.url])), 10.0)
        failed = 0
        for _ in range(60):  # new connections: both workers take turns
            if get(pool.port)[0] != 200:
                failed += 1
            if any(r.event == "endpoint_ejected" for r in reports):
                break
        (ejected,) = [r for r in reports if r.event == "endpoint_ejected"]
        assert ejected.extra["url"] == bad.url and ejected.extra["app"] == "hello"
        assert failed <= 3 + 1  # one count for the edge, not eject_after per worker
        assert [get(pool.port)[0] for _ in range(30)] == [200] * 30  # out in every worker
        wait_until(lambda: 'mycelium_edge_ejections_total{app="hello"} 1' in get(
            pool.port, "/_mycelium/metrics")[1].decode(), 10, "the ejection in the metrics")
        wait_until(lambda: any(r.event == "endpoint_returned" for r in reports), 10,
                   "the endpoint back after eject_time")
        wait_until(lambda: get(pool.port)[0] == 500, 10, "the returned endpoint tried again")
    finally:
        pool.stop(grace=2.0)


def test_a_canary_route_crosses_the_wire_with_digests_and_weights() -> None:
    from mycelium.edge.routes import Endpoint, Route, RouteTable

    routes = RouteTable({"web": Route("web", (Endpoint("http://127.0.0.1:1", "a", "b" * 64, 30),
                                              Endpoint("http://127.0.0.1:2", "b", "a" * 64, 70)))})
    back = routes_from_wire(routes_to_wire(routes))
    assert back == routes and back["web"].weighted
    assert [ep.weight for ep in back["web"].endpoints] == [30, 70]


@pytest.mark.timeout(60)
def test_the_workers_count_a_canary_s_answers_per_digest_for_the_fabric(upstreams, workers):
    from mycelium.edge.routes import Endpoint, Route, RouteTable

    up = upstreams()
    version = workers.set_routes(RouteTable({"hello": Route("hello", (
        Endpoint(up.url, "new", "b" * 64, 1), Endpoint(up.url, "old", "a" * 64, 3)))}))
    assert workers.wait_applied(version, timeout=10.0)
    assert [get(workers.port)[0] for _ in range(40)] == [200] * 40
    counts = wait_until(lambda: (c := workers.answer_counts())
                        and sum(a.answered for a in c) == 40 and c, 10.0, "answers reported")
    assert {a.digest for a in counts} == {"a" * 64, "b" * 64}
    assert all(a.errors == 0 for a in counts)
