"""``mycelium up`` under a ``Type=notify`` supervisor: READY=1 once the edge accepts requests,
WATCHDOG=1 while WATCHDOG_USEC is set, STOPPING=1 on shutdown; a fake NOTIFY_SOCKET (a real
unix datagram socket this test reads) stands in for systemd."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from mycelium.home import Home
from mycelium.spores import keygen
from tests.meshkit import UpProcess, free_port, repo_env, stopped_cleanly

CREDS = struct.Struct("3i")


def receive(sock: socket.socket, timeout: float) -> tuple[str, int]:
    """One datagram and its sender's pid."""
    sock.settimeout(timeout)
    data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(CREDS.size))
    pid = next(CREDS.unpack_from(d)[0] for level, kind, d in ancdata
               if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
    return data.decode(), pid


@pytest.mark.timeout(90)
def test_up_speaks_sd_notify_to_its_supervisor(tmp_path: Path) -> None:
    home = tmp_path / "home"
    keygen(Home(home).ensure())
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # a unix socket path is short
        address = str(Path(short) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind(address)
        port = free_port()
        env = {**repo_env(), "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
        env.pop("MYCELIUM_HOME", None)
        up = UpProcess([sys.executable, "-m", "mycelium", "up", "--home", str(home),
                        "--edge-port", str(port), "--nodes", "1"], env)
        with stopped_cleanly(up, home):
            text, pid = receive(sock, 60)
            assert pid == up.proc.pid
            assert text.splitlines()[0] == "READY=1"
            assert text.splitlines()[1].startswith("STATUS=mesh up: edge http://127.0.0.1:")
            up.wait_line("mesh up", 5)  # printed before READY=1 was sent
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_mycelium/health",
                                        timeout=5) as resp:
                assert resp.status == 200
            pings = [receive(sock, 10)[0] for _ in range(3)]
            assert pings == ["WATCHDOG=1"] * 3
            up.stop()
            deadline = time.monotonic() + 30
            while True:  # pings may still be queued before it
                text, _ = receive(sock, max(0.1, deadline - time.monotonic()))
                if text != "WATCHDOG=1":
                    break
            assert text.splitlines()[0] == "STOPPING=1"
        sock.close()


def test_workloads_never_inherit_the_mesh_s_notify_socket() -> None:
    code = ("import os; from mycelium.operator.sdnotify import SystemdNotifier; "
            "n = SystemdNotifier(); "
            "print(n.enabled, n.watchdog, 'NOTIFY_SOCKET' in os.environ, "
            "'WATCHDOG_USEC' in os.environ)")
    env = {**repo_env(), "NOTIFY_SOCKET": "@nowhere", "WATCHDOG_USEC": "3000000",
           "WATCHDOG_PID": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "None", "False", "False"]  # WATCHDOG_PID names another process
