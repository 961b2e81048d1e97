"""TLS termination on the edge: policy, SNI, reload, bad clients, the HTTPS redirect."""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
from pathlib import Path

import pytest
from edge_helpers import echo_app, raw_exchange, table
from hypothesis import given
from hypothesis import strategies as st
from tls_certs import client_context, default_pair, make_pair, serial_of

from mycelium.edge import EdgeConfig, EdgeServer
from mycelium.edge.tls import (
    CertPair,
    CertStore,
    TLSConfigError,
    TLSSettings,
    cert_names,
    https_location,
    name_matches,
)


def tls_edge(edges, routes=None, *pairs: tuple[Path, Path], **config) -> EdgeServer:
    chosen = pairs or (default_pair(),)
    settings = TLSSettings(port=0, pairs=tuple(CertPair(c, k) for c, k in chosen),
                           redirect=config.pop("redirect", False))
    return edges(routes, tls=settings, **config)


def handshake(edge: EdgeServer, name: str = "localhost") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", edge.tls_port), timeout=5)
    return client_context().wrap_socket(raw, server_hostname=name)


def get(sock: socket.socket, path: str = "/hello/x", host: str = "localhost") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    resp = http.client.HTTPResponse(sock)  # type: ignore[arg-type]
    resp.begin()
    body = resp.read()
    return f"{resp.status} ".encode() + body


# -- pure ----------------------------------------------------------------------------------------
def test_wildcards_match_exactly_one_label() -> None:
    assert name_matches("*.example.com", "a.example.com")
    assert name_matches("*.example.com", "A.Example.COM.")
    assert not name_matches("*.example.com", "example.com")
    assert not name_matches("*.example.com", "a.b.example.com")
    assert name_matches("shop.example", "SHOP.example")
    assert not name_matches("shop.example", "xshop.example")


def test_the_redirect_keeps_path_and_query_and_names_the_port_unless_443() -> None:
    names = ("localhost", "127.0.0.1", "*.shop.example")
    assert https_location("localhost:8080", "/a/b?c=1", 8443, names) == \
        "https://localhost:8443/a/b?c=1"
    assert https_location("x.shop.example", "/", 443, names) == "https://x.shop.example/"
    assert https_location("127.0.0.1:80", "/q", 443, names) == "https://127.0.0.1/q"
    assert https_location("localhost", "/_mycelium/health", 8443, names) is None
    assert https_location("other.example", "/a", 8443, names) is None
    assert https_location(None, "/a", 8443, names) is None
    assert https_location("localhost", "*", 8443, names) is None


@given(st.text(alphabet="abc/?=&%.-_", max_size=30), st.integers(1, 65535))
def test_a_redirect_is_always_to_https_on_the_same_target(rest: str, port: int) -> None:
    target = "/" + rest
    where = https_location("localhost", target, port, ("localhost",))
    if target.startswith("/_mycelium/"):
        assert where is None
    else:
        assert where is not None and where.startswith("https://localhost")
        assert where.endswith(target) and (port == 443) != (f":{port}/" in where)


def test_the_names_come_from_the_subject_alt_name() -> None:
    cert, _ = make_pair("names", "Shop.Example", "*.api.example", "10.0.0.1")
    assert cert_names(cert.read_bytes()) == ("shop.example", "*.api.example", "10.0.0.1")


@pytest.mark.parametrize("case", ["missing", "not-pem", "mismatch", "key-missing"])
def test_bad_pairs_are_refused_with_a_message_naming_the_file(tmp_path: Path, case: str) -> None:
    cert, key = default_pair()
    other_cert, other_key = make_pair("other", "other.example")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    pair = {"missing": CertPair(tmp_path / "none.pem", key), "not-pem": CertPair(junk, key),
            "mismatch": CertPair(cert, other_key),
            "key-missing": CertPair(other_cert, tmp_path / "none.key")}[case]
    with pytest.raises(TLSConfigError) as info:
        CertStore([pair])
    assert info.value.exit_code == 2
    assert str(pair.cert if case in ("missing", "not-pem", "mismatch") else pair.key) in str(
        info.value)


# -- a real edge ---------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_the_policy_is_tls12_plus_aead_ecdhe_alpn_http11(upstreams, edges) -> None:
    edge = tls_edge(edges, table(hello=[upstreams(echo_app()).url]))
    ctx = client_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", edge.tls_port), timeout=5),
                         server_hostname="localhost") as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        assert get(s).startswith(b"200 ")
    old = client_context()
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError), socket.create_connection(
            ("127.0.0.1", edge.tls_port), timeout=5) as raw:
        old.wrap_socket(raw, server_hostname="localhost")
    weak = client_context()
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-SHA:AES256-GCM-SHA384")  # no ECDHE: RSA key exchange only
    with pytest.raises(ssl.SSLError), socket.create_connection(
            ("127.0.0.1", edge.tls_port), timeout=5) as raw:
        weak.wrap_socket(raw, server_hostname="localhost")
    tls12 = client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls12.wrap_socket(socket.create_connection(("127.0.0.1", edge.tls_port), timeout=5),
                           server_hostname="localhost") as s:
        cipher = s.cipher()
        assert cipher is not None and cipher[0].startswith("ECDHE-")
        assert "GCM" in cipher[0] or "CHACHA20" in cipher[0]


def test_the_plain_port_keeps_serving_http(upstreams, edges) -> None:
    edge = tls_edge(edges, table(hello=[upstreams(echo_app()).url]))
    reply = raw_exchange(edge.port, b"GET /hello/x HTTP/1.1\r\nHost: a\r\n"
                                    b"Connection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and b'"http"' in reply  # X-Forwarded-Proto


def test_sni_picks_the_certificate_by_exact_name_and_wildcard(upstreams, edges) -> None:
    default = default_pair()
    shop = make_pair("shop", "shop.example")
    wild = make_pair("wild", "*.api.example")
    edge = tls_edge(edges, table(hello=[upstreams(echo_app()).url]), default, shop, wild)
    serials = {}
    for tag, (cert, _) in {"default": default, "shop": shop, "wild": wild}.items():
        from cryptography import x509
        serials[tag] = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    with handshake(edge, "shop.example") as s:
        assert serial_of(s) == serials["shop"] and get(s, host="shop.example")[:4] == b"200 "
    with handshake(edge, "v1.api.example") as s:
        assert serial_of(s) == serials["wild"]
    with handshake(edge, "localhost") as s:
        assert serial_of(s) == serials["default"]
    ctx = client_context()
    ctx.check_hostname = False
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", edge.tls_port), timeout=5)) as s:
        assert serial_of(s) == serials["default"]  # no SNI at all


def test_a_reload_serves_new_handshakes_and_keeps_open_connections(upstreams, edges,
                                                                   tmp_path: Path) -> None:
    first = make_pair("reload-1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(first[0], cert)
    shutil.copy(first[1], key)
    edge = tls_edge(edges, table(hello=[upstreams(echo_app()).url]), (cert, key))
    kept = handshake(edge)
    old_serial = serial_of(kept)
    assert get(kept)[:4] == b"200 "
    second = make_pair("reload-2", "localhost")
    shutil.copy(second[0], cert)
    shutil.copy(second[1], key)
    edge.reload_certs()
    with handshake(edge) as fresh:
        assert serial_of(fresh) != old_serial and get(fresh)[:4] == b"200 "
    assert get(kept)[:4] == b"200 "  # the open connection was not dropped
    key.write_text("garbage\n")
    with pytest.raises(TLSConfigError):
        edge.reload_certs()
    with handshake(edge) as after:  # the last good pair stays in use
        assert serial_of(after) != old_serial and get(after)[:4] == b"200 "
    kept.close()


def test_garbage_and_plain_http_on_the_tls_port_never_disturb_a_tls_client(upstreams,
                                                                           edges) -> None:
    edge = tls_edge(edges, table(hello=[upstreams(echo_app()).url]))
    client = handshake(edge)
    assert get(client)[:4] == b"200 "
    for junk in (b"\x00\xff garbage \x16\x03\x01\x00\x05hello" * 50,
                 b"GET /hello/x HTTP/1.1\r\nHost: localhost\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", edge.tls_port), timeout=5) as bad:
            bad.sendall(junk)
            bad.settimeout(5)
            try:
                answer = bad.recv(65536)
            except ConnectionResetError:
                answer = b""
            assert b"200" not in answer  # a TLS alert or a close, never a proxied answer
        assert get(client)[:4] == b"200 "  # the TLS client is served meanwhile and after
    half = socket.create_connection(("127.0.0.1", edge.tls_port), timeout=5)
    half.sendall(b"\x16\x03\x01\x02\x00\x01")  # a handshake that never finishes
    assert get(client)[:4] == b"200 "
    half.close()
    client.close()


def test_https_redirect_on_the_plain_port(upstreams, edges) -> None:
    edge = tls_edge(edges, table(hello=[upstreams(echo_app()).url]), redirect=True)
    reply = raw_exchange(edge.port, b"GET /hello/x?y=1 HTTP/1.1\r\nHost: localhost:8080\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 308")
    assert f"Location: https://localhost:{edge.tls_port}/hello/x?y=1\r\n".encode() in reply
    assert b"X-Mycelium-Edge: edge-test\r\n" in reply
    own = raw_exchange(edge.port, b"GET /_mycelium/health HTTP/1.1\r\nHost: localhost\r\n"
                                  b"Connection: close\r\n\r\n")
    assert own.startswith(b"HTTP/1.1 200")
    other = raw_exchange(edge.port, b"GET /hello/x HTTP/1.1\r\nHost: nocert.example\r\n"
                                    b"Connection: close\r\n\r\n")
    assert other.startswith(b"HTTP/1.1 200")  # no certificate names it: served over http


def test_a_bad_pair_fails_start_and_nothing_listens(tmp_path: Path) -> None:
    cert, _ = default_pair()
    _, other_key = make_pair("mismatch", "x.example")
    server = EdgeServer(EdgeConfig(port=0, tls=TLSSettings(port=0, pairs=(
        CertPair(cert, other_key),))))
    with pytest.raises(TLSConfigError):
        server.start()
    assert not server.running


@pytest.mark.timeout(60)
def test_edge_workers_serve_tls_and_reload(upstreams, tmp_path: Path) -> None:
    from edge_mesh import wait_until

    from mycelium.edge.worker import config_from_wire, config_to_wire
    from mycelium.edge.workers import EdgeWorkers

    first = make_pair("workers-1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(first[0], cert)
    shutil.copy(first[1], key)
    config = EdgeConfig(port=0, workers=2, tls=TLSSettings(port=0, pairs=(CertPair(cert, key),),
                                                           redirect=True))
    assert config_from_wire(config_to_wire(config)) == config
    pool = EdgeWorkers(config)
    pool.start()
    try:
        assert pool.wait_applied(pool.set_routes(table(hello=[upstreams(echo_app()).url])), 10)
        assert pool.tls_port is not None

        def serials() -> set[int]:
            found = set()
            for _ in range(8):  # SO_REUSEPORT spreads the connections over the workers
                raw = socket.create_connection(("127.0.0.1", pool.tls_port), timeout=5)
                with client_context().wrap_socket(raw, server_hostname="localhost") as s:
                    assert get(s)[:4] == b"200 "
                    found.add(serial_of(s))
            return found

        old = serials()
        assert len(old) == 1
        second = make_pair("workers-2", "localhost")
        shutil.copy(second[0], cert)
        shutil.copy(second[1], key)
        pool.reload_certs()
        wait_until(lambda: serials().isdisjoint(old), 20, "every worker on the new certificate")
        key.write_text("garbage\n")
        with pytest.raises(TLSConfigError):
            pool.reload_certs()  # checked here first: no worker is told
    finally:
        pool.stop(grace=2.0)
