"""The edge's pure cores, without sockets: routing table, balancer, HTTP/1.1 parsing, metrics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.edge import EdgeConfig, EdgeConfigError, Endpoint, Route, RouteTable, split_target
from mycelium.edge.balancer import Balancer
from mycelium.edge.chunked import ChunkedReader
from mycelium.edge.http1 import (
    ProtocolError,
    parse_request_head,
    parse_response_head,
)
from mycelium.edge.metrics import EdgeMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def route(app: str, *ports: int) -> Route:
    return Route(app, tuple(Endpoint(f"http://127.0.0.1:{p}", f"{app}#{p}") for p in ports))


@pytest.mark.parametrize(("target", "expected"), [
    ("/hello/a/b?x=1", ("hello", "/a/b?x=1")),
    ("/hello", ("hello", "/")),
    ("/hello/", ("hello", "/")),
    ("/hello?x=1", ("hello", "/?x=1")),
    ("/hello//x", ("hello", "//x")),
    ("/", ("", "/")),
    ("*", None),
    ("http://x/y", None),
])
def test_split_target(target, expected):
    assert split_target(target) == expected


def test_route_table_is_an_immutable_validated_snapshot():
    source = {"hello": route("hello", 1)}
    table = RouteTable(source)
    source["other"] = route("other", 2)
    assert list(table) == ["hello"] and table.get("other") is None
    with pytest.raises(TypeError):
        table._routes["x"] = route("x", 3)  # type: ignore[index]
    with pytest.raises(EdgeConfigError):
        RouteTable({"a": route("b", 1)})
    with pytest.raises(EdgeConfigError):
        Route("Bad_Name")
    with pytest.raises(EdgeConfigError):
        Endpoint("https://127.0.0.1")
    assert Endpoint("http://127.0.0.1:8081").port == 8081


def test_config_rejects_nonsense():
    with pytest.raises(EdgeConfigError, match="read_timeout"):
        EdgeConfig(read_timeout=0)
    with pytest.raises(EdgeConfigError):
        EdgeConfig(port=70000)
    with pytest.raises(EdgeConfigError):
        EdgeConfig(edge_id="a\r\nX-Evil: 1")


def test_round_robin_walks_every_endpoint_in_turn():
    balancer = Balancer()
    r = route("hello", 1, 2, 3)
    firsts = [balancer.order(r)[0].port for _ in range(6)]
    assert firsts == [1, 2, 3, 1, 2, 3]
    assert [ep.port for ep in balancer.order(r)] == [1, 2, 3]


def test_passive_health_takes_an_endpoint_out_for_fail_timeout():
    clock = Clock()
    balancer = Balancer(max_fails=2, fail_timeout=10.0, clock=clock)
    r = route("hello", 1, 2)
    bad = r.endpoints[0]
    balancer.failed(bad)
    assert not balancer.is_down(bad)  # one failure of two allowed
    clock.now += 11
    balancer.failed(bad)
    assert not balancer.is_down(bad)  # the first one left the window
    balancer.failed(bad)
    assert balancer.is_down(bad)
    assert [balancer.order(r)[0].port for _ in range(4)] == [2, 2, 2, 2]
    assert [ep.port for ep in balancer.order(r)][-1] == 1  # still tried last
    clock.now += 10.5
    assert not balancer.is_down(bad)
    balancer.failed(bad)
    balancer.failed(bad)
    balancer.succeeded(bad)
    assert not balancer.is_down(bad)
    balancer.failed(bad)
    balancer.forget(set())
    balancer.failed(bad)
    assert not balancer.is_down(bad)


def test_request_head_framing_and_connection_tokens():
    head = parse_request_head(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                              b"Connection: close, X-Foo\r\nX-Foo: 1\r\nX-Bar: 2")
    assert (head.method, head.target, head.content_length, head.keep_alive) == \
        ("POST", "/a", 5, False)
    assert head.end_to_end() == [b"Host: x", b"Content-Length: 5", b"X-Bar: 2"]
    old = parse_request_head(b"GET / HTTP/1.0\r\nConnection: keep-alive")
    assert old.keep_alive and old.minor == 0
    assert not parse_request_head(b"GET / HTTP/1.0").keep_alive
    chunked = parse_request_head(b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked")
    assert chunked.chunked and chunked.content_length is None


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET / HTTP/2.0", 505),
    (b"GET /  HTTP/1.1", 400),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2", 400),
    (b"GET / HTTP/1.1\r\nContent-Length: -1", 400),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked", 400),
    (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip", 501),
    (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 501),
    (b"GET / HTTP/1.1\r\nX: a\x00b", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot", 417),
])
def test_request_head_smuggling_shapes_are_refused(raw, status):
    with pytest.raises(ProtocolError) as info:
        parse_request_head(raw)
    assert info.value.status == status


def test_response_head():
    head = parse_response_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0")
    assert (head.status, head.content_length, head.keep_alive) == (404, 0, True)
    assert parse_response_head(b"HTTP/1.1 204").status == 204
    for bad in (b"HTTP/1.1 2000 OK", b"ICY 200 OK", b"HTTP/1.1 abc"):
        with pytest.raises(ProtocolError):
            parse_response_head(bad)


CHUNKED = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: x\r\nTrailer: y\r\n\r\nNEXT"
REFRAMED = b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: x\r\n\r\n"
"""Extensions dropped, the edge's own framing, a trailer kept and a forbidden one dropped."""


@given(st.lists(st.integers(min_value=1, max_value=len(CHUNKED)), max_size=8))
def test_chunked_reader_is_split_invariant(cuts):
    for decode, expected in ((False, REFRAMED), (True, b"hello world")):
        reader, buf, out = ChunkedReader(decode=decode), bytearray(), b""
        last = 0
        for cut in [*sorted(cuts), len(CHUNKED)]:
            buf += CHUNKED[last:cut]
            last = max(last, cut)
            out += reader.feed(buf)
        assert reader.done and out == expected and bytes(buf) == b"NEXT"
        assert reader.total == 11


def test_chunked_reader_refuses_bad_framing():
    for bad in (b"zz\r\n", b"5\r\nhelloXX", b"1" * 5000):
        with pytest.raises(ProtocolError):
            ChunkedReader().feed(bytearray(bad))


def test_metrics_exposition():
    metrics = EdgeMetrics()
    metrics.request("hello", 200)
    metrics.request("hello", 200)
    metrics.observe("hello", 0.003)
    metrics.observe("hello", 99.0)
    metrics.restarts = {'we"ird': 1}
    text = metrics.render()
    assert 'mycelium_edge_requests_total{app="hello",code="200"} 2' in text
    assert 'mycelium_edge_upstream_latency_seconds_bucket{app="hello",le="0.0025"} 0' in text
    assert 'mycelium_edge_upstream_latency_seconds_bucket{app="hello",le="0.005"} 1' in text
    assert 'mycelium_edge_upstream_latency_seconds_bucket{app="hello",le="10.0"} 1' in text
    assert 'mycelium_edge_upstream_latency_seconds_bucket{app="hello",le="+Inf"} 2' in text
    assert 'mycelium_app_restarts{app="we\\"ird"} 1' in text


def test_identical_heads_are_parsed_once_and_bad_ones_always_refused():
    from mycelium.edge.http1 import ProtocolError, parse_request_head, parse_response_head

    head = b"GET /hello/x HTTP/1.1\r\nHost: a\r\nX-Cached: yes"
    assert parse_request_head(head) is parse_request_head(bytes(head))  # the cache's object
    assert parse_request_head(head + b"2").block.endswith(b"yes2")
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2"
    assert parse_response_head(resp) is parse_response_head(bytes(resp))
    for _ in range(2):  # an error is never remembered as a head
        with pytest.raises(ProtocolError):
            parse_request_head(b"GET /x HTTP/1.1\r\nHost : a")


def test_each_snapshot_remembers_its_own_routing_answers():
    from mycelium.edge.routes import route_target

    old = RouteTable({"hello": Route("hello", (Endpoint("http://127.0.0.1:1", "h#1"),))})
    new = RouteTable({"hello": Route("hello", (Endpoint("http://127.0.0.1:1", "h#1"),),
                                     hosts=("example.com",))})
    assert route_target(old, b"example.com", "/hello/a") == ("hello", "/a", b"/hello")
    assert route_target(old, b"example.com", "/hello/a") == ("hello", "/a", b"/hello")
    assert route_target(new, b"example.com", "/hello/a") == ("hello", "/hello/a", b"")
    assert route_target(old, None, "*") is None and route_target(old, None, "*") is None


def test_the_edge_runs_one_worker_process_per_usable_cpu_by_default():
    import os

    from mycelium.defaults import usable_cpus
    from mycelium.operator.config import MeshConfig

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert usable_cpus() == cpus >= 1
    assert EdgeConfig().workers == MeshConfig().edge.workers == usable_cpus()
    assert EdgeConfig(workers=0).workers == 0  # the in-process thread stays for tests
