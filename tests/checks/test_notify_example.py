"""examples/notify-daemon on its own, under a fake systemd: a real unix datagram socket as its
NOTIFY_SOCKET, read by this test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from mycelium.spores import load_input_manifest
from tests.meshkit import REPO, free_port

EXAMPLE = REPO / "examples" / "notify-daemon"


def test_the_manifest_is_valid_and_uses_notify_readiness_and_liveness() -> None:
    manifest = load_input_manifest(EXAMPLE / "manifest.json")
    assert manifest.name == "notify-daemon"
    assert [(c.type, c.role) for c in manifest.checks] == [
        ("notify", "startup"), ("http", "readiness"), ("tcp", "liveness")]
    assert manifest.checks[0].watchdog == 2.0
    script = EXAMPLE / "notify-daemon"
    assert os.access(script, os.X_OK)
    assert script.read_text().startswith("#!/usr/bin/env -S python3 -S\n")


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_daemon_speaks_sd_notify_as_systemd_expects() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        address = str(Path(short) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        sock.settimeout(10)
        port = free_port()
        proc = subprocess.Popen([str(EXAMPLE / "notify-daemon")], env={
            **os.environ, "PORT": str(port), "NOTIFY_SOCKET": address,
            "WATCHDOG_USEC": "200000", "START_DELAY": "0.1"}, start_new_session=True)
        try:
            assert sock.recv(4096) == b"STATUS=starting"
            assert sock.recv(4096) == b"READY=1\nSTATUS=serving 0 requests"
            assert _get(port, "/health") == 200  # it serves once it said READY=1
            assert [sock.recv(4096) for _ in range(2)] == [b"WATCHDOG=1"] * 2
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                assert json.loads(resp.read())["requests"] == 1
            while (got := sock.recv(4096)) == b"WATCHDOG=1":
                pass
            assert got == b"STATUS=serving 1 requests"
            assert _get(port, "/drain?seconds=30") == 200
            assert _get(port, "/ready") == 503 and _get(port, "/health") == 200
            proc.send_signal(signal.SIGTERM)
            while (got := sock.recv(4096)) == b"WATCHDOG=1":
                pass
            assert got == b"STOPPING=1\nSTATUS=stopping"
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            sock.close()
