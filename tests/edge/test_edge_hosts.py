"""Host routing: names owned by apps (exact or *.suffix), the path unchanged, path fallback."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
from edge_mesh import EdgeMesh, cli, wait_until
from hypothesis import given
from hypothesis import strategies as st

from mycelium.edge import EdgeConfigError, Endpoint, Route, RouteTable
from mycelium.edge.hosts import HostMap, normalize_host
from mycelium.fabric.errors import BadPlan
from mycelium.fabric.validate import check_hosts, host_names, host_owners
from mycelium.messages import PublishPlan
from tests.edge.edge_helpers import echo_app
from tests.meshkit import stopped_cleanly

HOSTS = HostMap({"api": ["api.example.com", "*.api.example.com"], "web": ["*.example.com"],
                 "ip": ["127.0.0.2"]})


@pytest.mark.parametrize(("host", "app"), [
    (b"api.example.com", "api"), (b"API.Example.COM:8080", "api"), (b"api.example.com.", "api"),
    (b"v1.api.example.com", "api"), (b"a.b.api.example.com", "api"),
    (b"www.example.com", "web"), (b"a.b.example.com:1", "web"),
    (b"example.com", None), (b"com", None), (b"example.org", None), (b"xexample.com", None),
    (b"127.0.0.2:80", "ip"), (b"[::1]:8080", None), (b"", None),
])
def test_host_matching(host, app):
    assert HOSTS.match(host) == app


@given(st.lists(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), min_size=1, max_size=4))
def test_a_wildcard_matches_every_deeper_name_and_never_its_bare_suffix(labels):
    hosts = HostMap({"w": ["*.example.com"]})
    assert hosts.match(".".join([*labels, "example", "com"]).encode()) == "w"
    assert hosts.match(b"example.com") is None
    assert normalize_host(".".join(labels).upper().encode() + b":99") == ".".join(labels)


def test_a_name_belongs_to_one_app():
    with pytest.raises(EdgeConfigError):
        HostMap({"a": ["x.com"], "b": ["x.com"]})
    with pytest.raises(EdgeConfigError):
        HostMap({"a": ["bad host"]})
    assert host_names(["B.com", "b.com.", "*.C.com"]) == ("*.c.com", "b.com")
    assert host_names([""]) == ()
    for bad in (["a b"], ["*"], ["*.*.x"], ["x..y"], [7]):
        with pytest.raises(BadPlan):
            host_names(bad)
    def plan(app: str, hosts: tuple[str, ...] | None) -> PublishPlan:
        return PublishPlan(app=app, digest="0" * 64, hosts=hosts)

    check_hosts(plan("a", ("x.com",)), {"a": ("x.com",), "b": ("y.com",)})
    check_hosts(plan("a", None), {"b": ("y.com",)})
    with pytest.raises(BadPlan, match="already belongs to app 'b'"):
        check_hosts(plan("a", ("Y.com",)), {"b": ("y.com",)})
    # a batch that moves a name from b to a is fine; stopping b frees its names
    assert host_owners({}, [plan("a", ("y.com",)), plan("b", ())]) == {"a": ("y.com",),
                                                                       "b": ()}


def _get(port: int, path: str, host: str) -> tuple[int, dict, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read()
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        return resp.status, doc, dict(resp.headers)
    finally:
        conn.close()


def test_host_routes_keep_the_path_and_other_hosts_use_path_routing(upstreams, edges):
    api, web = upstreams(echo_app()), upstreams(echo_app())
    edge = edges(RouteTable({
        "api": Route("api", (Endpoint(api.url, "api#0"),), ("api.example.com",)),
        "web": Route("web", (Endpoint(web.url, "web#0"),), ("*.example.com",)),
    }))
    for _ in range(2):  # the slow path first, then the fast path on a pooled connection
        status, doc, _ = _get(edge.port, "/api/v1?q=1", "API.example.com:8443")
        assert status == 200 and doc["target"] == "/api/v1?q=1" and doc["port"] == api.port
        assert "X-Forwarded-Prefix" not in dict(doc["headers"])
    status, doc, _ = _get(edge.port, "/", "www.example.com")
    assert (status, doc["target"], doc["port"]) == (200, "/", web.port)
    status, doc, _ = _get(edge.port, "/web/x", "example.com")  # the bare suffix: path routing
    assert (status, doc["target"], doc["port"]) == (200, "/x", web.port)
    assert dict(doc["headers"])["X-Forwarded-Prefix"] == "/web"
    status, doc, headers = _get(edge.port, "/_mycelium/health", "api.example.com")
    assert status == 200 and doc == {"status": "ok"} and headers["X-Mycelium-Edge"]
    assert _get(edge.port, "/nope/", "other.org")[0] == 404


def _status_hosts(home: Path) -> dict[str, list[str]]:
    out = cli(home, "status", "--json")
    assert out.returncode == 0, out.stderr
    return {a["app"]: a["hosts"] for a in json.loads(out.stdout)["apps"]}


def test_deploy_host_is_durable_exclusive_and_clearable(mesh_home, hello_spores):
    digests = hello_spores[1]
    mesh = EdgeMesh(mesh_home, nodes=1)
    with stopped_cleanly(mesh, mesh_home):
        done = cli(mesh_home, "deploy", "hello", digests["hello"], "--host", "Hello.Test",
                   "--host", "*.apps.test")
        assert done.returncode == 0, done.stderr
        assert cli(mesh_home, "deploy", "other", digests["other"]).returncode == 0
        assert _status_hosts(mesh_home) == {"hello": ["*.apps.test", "hello.test"], "other": []}
        wait_until(lambda: _get(mesh.port, "/", "x.apps.test:1")[0] == 200, 30, "host route")
        taken = cli(mesh_home, "deploy", "other", digests["other"], "--host", "hello.test")
        assert taken.returncode == 2 and "already belongs to app 'hello'" in taken.stderr
        assert _status_hosts(mesh_home)["other"] == []
        bad = cli(mesh_home, "deploy", "other", digests["other"], "--host", "not a name")
        assert bad.returncode == 2 and bad.stderr.startswith("error: ")
        again = cli(mesh_home, "deploy", "hello", digests["hello"], "--max", "1")
        assert again.returncode == 0, again.stderr
        assert _status_hosts(mesh_home)["hello"] == ["*.apps.test", "hello.test"]  # kept
        cleared = cli(mesh_home, "deploy", "hello", digests["hello"], "--host", "")
        assert cleared.returncode == 0, cleared.stderr
        assert _status_hosts(mesh_home)["hello"] == []
        wait_until(lambda: _get(mesh.port, "/", "x.apps.test")[0] == 404, 30, "route gone")
