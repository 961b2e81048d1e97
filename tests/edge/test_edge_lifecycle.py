"""Lifecycle: start/stop misuse, graceful drain, route swaps under load, metrics."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time

import pytest
from aiohttp import web
from edge_helpers import dead_url, echo_app, request, settled_metrics, table

from mycelium.edge import EdgeConfig, EdgeError, EdgeServer, RouteTable


def test_bind_failure_and_double_start_are_clear_errors(edges):
    edge = edges(workers=0)  # the in-process server's own lifecycle
    other = EdgeServer(EdgeConfig(port=edge.port))
    with pytest.raises(EdgeError, match="cannot listen"):
        other.start()
    other.stop()  # stopping a server that never ran is a no-op
    with pytest.raises(EdgeError, match="already"):
        edge.start()
    with pytest.raises(TypeError):
        edge.set_routes({"hello": []})  # type: ignore[arg-type]


def test_stop_releases_the_port_for_a_successor():
    first = EdgeServer(EdgeConfig(port=0, edge_id="one"))
    first.start()
    port = first.port
    first.stop(grace=0.5)
    first.stop()  # idempotent
    second = EdgeServer(EdgeConfig(port=port, edge_id="two"))
    second.start()
    try:
        assert request(second, "GET", "/_mycelium/health")[1]["X-Mycelium-Edge"] == "two"
    finally:
        second.stop(grace=0.5)


@pytest.mark.timeout(20)
def test_graceful_drain_finishes_in_flight_requests_and_refuses_new_ones(upstreams):
    arrived, release = threading.Event(), threading.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return web.Response(text="finished")

    up = upstreams(echo_app(slow=slow))
    edge = EdgeServer(EdgeConfig(port=0))
    edge.start()
    edge.set_routes(table(hello=[up.url]))
    port = edge.port
    results: list[tuple[int, bytes]] = []
    client = threading.Thread(target=lambda: results.append(
        request(edge, "GET", "/hello/slow")[::2]))
    client.start()
    assert arrived.wait(5)
    stopper = threading.Thread(target=edge.stop, kwargs={"grace": 10.0})
    stopper.start()
    deadline = time.monotonic() + 5
    while True:  # the listening socket goes away first
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "edge still accepting while draining"
    assert stopper.is_alive()  # ... but stop() waits for the in-flight request
    release.set()
    client.join(5)
    stopper.join(5)
    assert results == [(200, b"finished")]
    assert not stopper.is_alive()


@pytest.mark.timeout(20)
def test_drain_cuts_requests_that_outlive_the_grace(upstreams):
    release = threading.Event()
    arrived = threading.Event()

    async def stuck(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return web.Response(text="too late")

    up = upstreams(echo_app(stuck=stuck))
    edge = EdgeServer(EdgeConfig(port=0))
    edge.start()
    edge.set_routes(table(hello=[up.url]))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            request(edge, "GET", "/hello/stuck")
        except Exception as exc:
            errors.append(exc)

    client = threading.Thread(target=call)
    client.start()
    assert arrived.wait(5)
    started = time.monotonic()
    edge.stop(grace=0.3)
    assert time.monotonic() - started < 3
    client.join(5)
    release.set()
    assert len(errors) == 1


@pytest.mark.timeout(30)
def test_route_swaps_under_load_never_fail_a_request(upstreams, edges):
    a, b = upstreams(), upstreams()
    edge = edges(table(hello=[a.url]))
    stop = threading.Event()
    statuses: list[int] = []
    ports: set[int] = set()

    def load() -> None:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
        while not stop.is_set():
            conn.request("GET", "/hello/x")
            resp = conn.getresponse()
            body = resp.read()
            statuses.append(resp.status)
            if resp.status == 200:
                ports.add(json.loads(body)["port"])
        conn.close()

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 15

    def wait_for_progress() -> None:
        seen = len(statuses)
        while len(statuses) < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.001)  # polls a condition with a deadline

    for i in range(100):
        edge.set_routes(table(hello=[[a.url], [b.url], [a.url, b.url]][i % 3]))
        wait_for_progress()
    edge.set_routes(table(hello=[b.url]))
    wait_for_progress()
    stop.set()
    for w in workers:
        w.join(10)
    assert statuses and set(statuses) == {200}
    assert ports == {a.port, b.port}
    assert json.loads(request(edge, "GET", "/hello/")[2])["port"] == b.port


def test_metrics_count_requests_retries_latency_and_restarts(upstreams, edges):
    up = upstreams()
    edge = edges(table(hello=[dead_url(), up.url], empty=[]))
    for _ in range(3):
        request(edge, "GET", "/hello/")
    request(edge, "GET", "/empty/")
    request(edge, "GET", "/ghost/")
    edge.set_restarts({"hello": 2, "crashy": 7})
    status, headers, _ = request(edge, "GET", "/_mycelium/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    counted = ('mycelium_edge_requests_total{app="hello",code="200"} 3',
               'mycelium_edge_requests_total{app="empty",code="503"} 1',
               'mycelium_edge_requests_total{app="",code="404"} 1',
               'mycelium_edge_upstream_latency_seconds_count{app="hello"} 3')
    text = settled_metrics(edge, *counted)  # each worker's part, whichever served what
    retries = re.search(r'mycelium_edge_retries_total\{app="hello"\} (\d+)', text)
    assert retries and 1 <= int(retries[1]) <= max(1, edge.config.workers)  # once per worker
    assert 'mycelium_edge_upstream_latency_seconds_count{app="hello"} 3' in text
    assert 'mycelium_edge_upstream_latency_seconds_bucket{app="hello",le="+Inf"} 3' in text
    assert 'mycelium_app_restarts{app="crashy"} 7' in text
    assert "# TYPE mycelium_edge_upstream_latency_seconds histogram" in text
    assert isinstance(edge.routes, RouteTable) and set(edge.routes) == {"hello", "empty"}
