"""The example workloads honour SPEC §5: PORT, /health, identity, echo, streaming, SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

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
    for name in ("hello", "crashy", "slow-start"):
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
