"""Prefix routes: X-Forwarded-Prefix upstream, escaping redirects put back under the prefix."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.edge.prefix import rewrite_location
from tests.edge.edge_helpers import table

UP = b"127.0.0.1:4000"


@pytest.mark.parametrize(("value", "expected"), [
    (b"/target", b"/flask/target"),
    (b"/", b"/flask/"),
    (b"/target?a=1#f", b"/flask/target?a=1#f"),
    (b"/flask/target", b"/flask/target"),
    (b"/flask", b"/flask"),
    (b"/flask?x=1", b"/flask?x=1"),
    (b"/flasky", b"/flask/flasky"),
    (b"http://127.0.0.1:4000/target", b"/flask/target"),
    (b"HTTP://127.0.0.1:4000", b"/flask/"),
    (b"http://127.0.0.1:4000/flask/x", b"/flask/x"),
    (b"http://127.0.0.1:40001/x", b"http://127.0.0.1:40001/x"),
    (b"https://example.com/x", b"https://example.com/x"),
    (b"//example.com/x", b"//example.com/x"),
    (b"target", b"target"),
    (b"../up", b"../up"),
])
def test_rewrite_location(value, expected):
    assert rewrite_location(value, b"/flask", UP) == expected
    assert rewrite_location(value, b"", UP) == value  # routed by host: nothing to fix


@given(st.binary(max_size=60))
def test_rewritten_paths_are_under_the_prefix_and_rewriting_is_idempotent(value):
    new = rewrite_location(value, b"/app", UP)
    if new != value:
        assert new == b"/app" or new.startswith(b"/app/")
    assert rewrite_location(new, b"/app", UP) == new


def _wsgi(environ, start_response):
    """A Flask-like app honouring X-Forwarded-Prefix as ProxyFix(x_prefix=1) does."""
    path = environ["PATH_INFO"]
    script = environ.get("HTTP_X_FORWARDED_PREFIX", "")
    host = f"127.0.0.1:{environ['SERVER_PORT']}"
    if path == "/redirect":  # redirect("/target")
        start_response("302 FOUND", [("Location", "/target"), ("Content-Length", "0")])
        return [b""]
    if path == "/own":  # an absolute URL built from the upstream's own address
        start_response("302 FOUND", [("Location", f"http://{host}/target"),
                                     ("Content-Length", "0")])
        return [b""]
    if path == "/url_for":  # url_for("target", _external=True) behind ProxyFix
        body = json.dumps({"url": f"http://{environ['HTTP_X_FORWARDED_HOST']}{script}/target",
                           "prefix": script}).encode()
        start_response("201 Created", [("Content-Location", f"{script}/target"),
                                       ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Length", "6")])
    return [b"target"]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def wsgi() -> Iterator[WSGIServer]:
    server = make_server("127.0.0.1", 0, _wsgi, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _get(port: int, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_redirects_stay_under_the_prefix_through_the_edge(wsgi, edges):
    edge = edges(table(flask=[f"http://127.0.0.1:{wsgi.server_port}"]))
    for path in ("/flask/redirect", "/flask/own"):
        resp = _get(edge.port, path)
        assert resp.status == 302 and resp.headers["Location"] == "/flask/target", path
    assert _get(edge.port, resp.headers["Location"]).status == 200


def test_the_upstream_is_told_its_prefix_and_a_client_cannot_forge_it(wsgi, edges):
    edge = edges(table(flask=[f"http://127.0.0.1:{wsgi.server_port}"]))
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    conn.request("GET", "/flask/url_for", headers={"X-Forwarded-Prefix": "/evil"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert body["prefix"] == "/flask"
    assert body["url"] == f"http://127.0.0.1:{edge.port}/flask/target"
    assert resp.headers["Content-Location"] == "/flask/target"


def test_a_real_flask_app_behind_proxyfix(edges):
    """The line the README gives: ProxyFix(x_prefix=1) and the edge agree on the prefix."""
    flask = pytest.importorskip("flask")
    from werkzeug.middleware.proxy_fix import ProxyFix

    app = flask.Flask("behind-the-edge")
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)

    @app.route("/go")
    def go():
        return flask.redirect("/target")

    @app.route("/target")
    def target():
        return {"external": flask.url_for("target", _external=True)}

    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        edge = edges(table(flask=[f"http://127.0.0.1:{server.server_port}"]))
        resp = _get(edge.port, "/flask/go")
        assert resp.status == 302 and resp.headers["Location"] == "/flask/target"
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
        conn.request("GET", "/flask/target")
        body = json.loads(conn.getresponse().read())
        conn.close()
        assert body["external"] == f"http://127.0.0.1:{edge.port}/flask/target"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
