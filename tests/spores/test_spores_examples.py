"""The example workloads honour the workload contract (docs/reference.md#workloads).

PORT, /health, identity, echo, streaming, SIGTERM.
"""

from __future__ import annotations

import http.client
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> float:
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "workload exited before it was healthy"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return time.monotonic() - start
        except OSError:
            time.sleep(0.01)  # polling a condition with a deadline, not synchronising by sleep
    raise AssertionError("workload never became healthy")


def _start(name: str, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen([str(EXAMPLES / name / name)], env={
        **os.environ, "PORT": str(port), "MYCELIUM_APP": name, "MYCELIUM_NODE": "node-1",
        "MYCELIUM_INSTANCE": f"{name}@node-1#1", "MYCELIUM_DIGEST": "0" * 64, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, port


@pytest.fixture
def hello() -> Iterator[int]:
    proc, port = _start("hello")
    try:
        _wait_healthy(port, proc)
        yield port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_hello_identity_echo_stream_slow_and_keepalive(hello: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", hello, timeout=10)
    status, body = _get(conn, "GET", "/")
    ident = json.loads(body)
    assert status == 200
    assert ident["app"] == "hello" and ident["version"] == "1.0.0"
    assert ident["instance"] == "hello@node-1#1" and ident["node"] == "node-1"
    sock = conn.sock
    status, body = _get(conn, "POST", "/echo/me?x=1&y=2", b"payload",
                        {"X-Test": "yes", "Content-Type": "text/plain"})
    echo = json.loads(body)
    assert conn.sock is sock, "HTTP/1.1 keep-alive: same connection reused"
    assert (echo["method"], echo["path"], echo["query"], echo["body"]) == (
        "POST", "/echo/me", "x=1&y=2", "payload")
    assert ["X-Test", "yes"] in echo["headers"]
    conn.request("GET", "/stream?n=4&delay=0.05")
    resp = conn.getresponse()
    assert resp.getheader("Transfer-Encoding") == "chunked"
    chunks = resp.read().decode().splitlines()
    assert chunks == [f"chunk {i}" for i in range(4)]
    started = time.monotonic()
    status, body = _get(conn, "GET", "/slow?delay=0.2")
    assert status == 200 and time.monotonic() - started >= 0.2
    status, body = _get(conn, "GET", "/slow?delay=soon")
    assert status == 400 and "error" in json.loads(body)
    conn.close()


def test_crashy_crashes_on_request_and_at_start() -> None:
    proc, port = _start("crashy")
    try:
        _wait_healthy(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        with pytest.raises((http.client.HTTPException, OSError)):
            _get(conn, "GET", "/crash")
        assert proc.wait(timeout=10) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc, _ = _start("crashy", CRASH_AT_START="1")
    assert proc.wait(timeout=10) == 1
    proc, _ = _start("crashy", CRASH_AFTER="0.2")
    assert proc.wait(timeout=10) == 3


def test_slow_start_serves_only_after_its_delay_and_stops_cleanly_while_starting() -> None:
    proc, port = _start("slow-start", START_DELAY="0.4")
    try:
        assert _wait_healthy(port, proc) >= 0.3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc, port = _start("slow-start", START_DELAY="30")
    assert proc.stderr is not None
    assert b"starting" in proc.stderr.readline()  # its SIGTERM handler is installed now
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_examples_are_executable_and_have_manifests() -> None:
    for name in ("hello", "crashy", "slow-start", "ws-echo"):
        script = EXAMPLES / name / name
        assert os.access(script, os.X_OK)
        # no site-packages for the examples: they start fast
        assert script.read_text().startswith("#!/usr/bin/env -S python3 -S\n")
        manifest = json.loads((EXAMPLES / name / "manifest.json").read_text())
        assert manifest["name"] == name
    assert os.access(EXAMPLES / "quickstart.sh", os.X_OK)


def test_hello_published_extracted_and_run_from_its_spore(tmp_path: Path) -> None:
    from mycelium.home import Home
    from mycelium.spores import Repo, extract, keygen, load_trusted, publish

    home = Home(tmp_path / "home")
    keygen(home)
    digest = publish(home, binary=EXAMPLES / "hello" / "hello",
                     manifest=EXAMPLES / "hello" / "manifest.json")
    repo = Repo(home.repo)
    manifest = repo.verify(digest, load_trusted(home)).manifest
    assert (manifest.name, manifest.version, manifest.health) == ("hello", "1.0.0", "/health")
    binary = extract(repo.path(digest), home.instances / "hello-1", load_trusted(home),
                     expected_digest=digest)
    port = _free_port()
    proc = subprocess.Popen([str(binary), *manifest.args], cwd=binary.parent,
                            env={**os.environ, **manifest.env, "PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(port, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- hello, on the wire: it answers as the http.server version it replaced did -----------------

HELLO = EXAMPLES / "hello" / "hello"


def _exchange(port: int, data: bytes, *, answers: int = 0) -> bytes:
    """Send raw bytes; read until that many JSON answers arrived (keep-alive) or EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while not answers or out.count(b"}\n") < answers:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def _responses(raw: bytes) -> list[tuple[bytes, dict[str, str], bytes]]:
    """Split a byte stream into (status line, headers, body) by Content-Length."""
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = dict(line.decode().split(": ", 1) for line in lines)
        length = int(headers.get("Content-Length", 0)) if not status.endswith(b"Continue") else 0
        out.append((status, headers, raw[:length]))
        raw = raw[length:]
    return out


@pytest.mark.timeout(30)
def test_hello_keeps_http11_alive_closes_http10_and_honours_connection_close(hello: int) -> None:
    two = b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n"
    answers = _responses(_exchange(hello, two, answers=2))  # on one connection, kept open
    assert [a[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 2
    _, headers, body = answers[0]
    assert json.loads(body) == {"status": "ok"} and body == b'{"status": "ok"}\n'
    assert headers["Server"].startswith("hello/1.0.0 ") and headers["Content-Type"] == (
        "application/json")
    assert time.strptime(headers["Date"], "%a, %d %b %Y %H:%M:%S GMT")
    # HTTP/1.0 closes after one answer unless it asks for keep-alive; "close" is honoured
    assert len(_responses(_exchange(hello, two.replace(b"1.1", b"1.0")))) == 1
    kept = b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /health HTTP/1.0\r\n\r\n"
    assert len(_responses(_exchange(hello, kept))) == 2
    closed = b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\nGET /health HTTP/1.1\r\n\r\n"
    assert len(_responses(_exchange(hello, closed))) == 1


@pytest.mark.timeout(30)
def test_hello_reads_chunked_and_sized_bodies_and_echoes_headers_in_order(hello: int) -> None:
    chunked = (b"POST /up?x=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nx-lower: a\r\n"
               b"X-Dup: 1\r\nX-Dup: 2\r\n\r\n5;ext=1\r\nhello\r\n7\r\n w\xc3\xb6rld\r\n"
               b"0\r\nTrailer: x\r\n\r\nPUT /next HTTP/1.1\r\nContent-Length: 3\r\n"
               b"Connection: close\r\n\r\nabc")
    first, second = (json.loads(a[2]) for a in _responses(_exchange(hello, chunked)))
    assert (first["method"], first["path"], first["query"], first["body"]) == (
        "POST", "/up", "x=1", "hello w\u00f6rld")
    assert first["headers"] == [["Transfer-Encoding", "chunked"], ["x-lower", "a"],
                                ["X-Dup", "1"], ["X-Dup", "2"]]
    assert first["instance"] == "hello@node-1#1"
    assert (second["method"], second["body"]) == ("PUT", "abc")


@pytest.mark.timeout(30)
def test_hello_answers_expect_100_continue_before_the_body(hello: int) -> None:
    with socket.create_connection(("127.0.0.1", hello), timeout=10) as s:
        s.sendall(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any body was sent
        s.sendall(b"body")
        raw = b""
        while not raw.endswith(b"}\n"):
            raw += s.recv(65536)
    assert json.loads(_responses(raw)[0][2])["body"] == "body"


@pytest.mark.timeout(30)
def test_hello_head_has_the_get_headers_and_no_body(hello: int) -> None:
    raw = _exchange(hello, b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    head, get = raw.split(b"\r\n\r\n", 1)  # HEAD's headers, then at once the GET's answer
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and get.startswith(b"HTTP/1.1 200 OK\r\n")
    head_len = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    (_, get_headers, body), = _responses(get)
    assert head_len["Content-Length"] == get_headers["Content-Length"] == str(len(body))
    ident = json.loads(body)
    assert list(ident) == ["app", "version", "instance", "node", "digest", "pid"]


@pytest.mark.timeout(30)
def test_hello_answers_malformed_input_with_400_and_closes(hello: int) -> None:
    raw = _exchange(hello, b"GET /stream?n=lots HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n")
    (status, headers, body), = _responses(raw)  # one answer: the connection closed after it
    assert status == b"HTTP/1.1 400 Bad Request" and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "invalid literal for int() with base 10: 'lots'"}
    raw = _exchange(hello, b"POST /x HTTP/1.1\r\nContent-Length: ten\r\n\r\n")
    assert json.loads(_responses(raw)[0][2])["error"].startswith("invalid literal for int()")
    raw = _exchange(hello, b"GET / a HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n")
    (status, headers, body), = _responses(raw)  # a bad request line: http.server's HTML page
    assert status == b"HTTP/1.1 400 Bad request syntax ('GET / a HTTP/1.1')"
    assert headers["Connection"] == "close" and headers["Content-Type"] == (
        "text/html;charset=utf-8")
    assert b"<p>Message: Bad request syntax ('GET / a HTTP/1.1').</p>" in body
    raw = _exchange(hello, b"BREW / HTTP/1.1\r\n\r\n")
    assert _responses(raw)[0][0] == b"HTTP/1.1 501 Unsupported method ('BREW')"


@pytest.mark.timeout(30)
def test_hello_serves_beside_a_slow_request_and_exits_0_on_sigterm_during_it() -> None:
    proc, port = _start("hello")
    try:
        _wait_healthy(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            # /slow follows a /health on the same connection: once /health is answered, the
            # connection's thread is on /slow (it has both requests in its buffer)
            s.sendall(b"GET /health HTTP/1.1\r\n\r\nGET /slow?delay=30 HTTP/1.1\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}\n"):
                answer += s.recv(65536)
            other = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            assert _get(other, "GET", "/health")[0] == 200  # /slow blocks only its connection
            other.close()
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - started < 2, "SIGTERM is handled at once, not after /slow"
            assert s.recv(100) == b""  # the in-flight request is dropped, its connection closed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(30)
def test_hello_sleeps_while_idle_and_starts_without_heavy_imports() -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-S", "-X", "importtime", str(HELLO)],
                            env={**os.environ, "PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_healthy(port, proc)
        process = psutil.Process(proc.pid)
        cpu, switches = process.cpu_times(), process.num_ctx_switches()
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)  # one idle second, measured (it must not exit either)
        idle_cpu = sum(process.cpu_times()[:2]) - sum(cpu[:2])
        assert idle_cpu <= 0.02, f"idle hello used {idle_cpu * 1000:.0f} ms of CPU in 1 s"
        assert process.num_ctx_switches().voluntary - switches.voluntary <= 1, "it woke up"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        imported = {line.split("|")[-1].strip() for line in proc.stderr.read().decode().splitlines()
                    if line.startswith("import time:")}
        assert "_socket" in imported
        heavy = {"socket", "signal", "json", "threading", "http.server", "urllib.parse", "re",
                 "enum", "email.parser"}
        assert not heavy & imported, f"imported at start: {sorted(heavy & imported)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(30)
def test_hello_json_encoder_writes_what_json_dumps_writes() -> None:
    hello = runpy.run_path(str(HELLO))  # not __main__: defines, does not serve
    samples = ["", "plain", 'q"uote\\back/slash', "\x00\x1f\x7f\n\r\t\b\f", "caf\u00e9 \u20ac",
               "\\x41 \\\\U0001f600 \\u00e9 \\\x08",  # backslashes next to escape-like text
               "\U0001f600", "\ud800", 0, -7, 2**70, 1.5, 0.1, 1e-7, 1e300, -0.0,
               float("inf"), float("-inf"), float("nan"), True, False, None, [], {},
               {"a": [1, "b", {"c": None}], "\u00e9": [[True, 2.0]]}]
    for value in samples:
        assert hello["to_json"](value) == json.dumps(value), value
    every_character = "".join(map(chr, range(0x110000)))  # surrogates and all
    assert hello["to_json"](every_character) == json.dumps(every_character)
