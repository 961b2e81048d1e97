"""What the benchmarks share: free ports, percentiles, polling and a ``mycelium up`` of their own.

Imported as ``bench._common`` once the script has put the repository root first on ``sys.path``
(a bare ``import`` from bench/ would be one step from bench/supervisors.py shadowing the package).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mycelium.home import Home
from mycelium.operator.control import ControlClient

__all__ = ["ENV", "HELLO", "REPO", "Clients", "Up", "free_port", "get", "head_commit",
           "hello_start_times", "pct", "wait"]

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
HELLO = REPO / "examples" / "hello" / "hello"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile of ``values`` (nearest rank, no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def wait(predicate: Any, timeout: float = 60.0, what: str = "", interval: float = 0.0) -> Any:
    """Poll until truthy and return the value; ``SystemExit`` after ``timeout`` seconds.

    Back to back (``interval`` 0) for latency figures; with ``interval`` for long waits, where a
    whole-mesh ``status`` every few ms would itself load the mesh being measured.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if interval:
            time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what or predicate}")


def get(url: str) -> int:
    """GET ``url``: its status, 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def head_commit() -> str:
    """The short commit the benchmark ran on (for its JSON line)."""
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()


def hello_start_times(rounds: int, path: str, poll: float) -> list[float]:
    """Seconds from the exec of examples/hello (spawned directly, no mesh) to its first 200 on
    ``path``, polled every ``poll`` s, ``rounds`` times: the workload's own share of a start."""
    # imported here: mycelium.node is heavy, and the benches that only want a port skip it
    from mycelium.node.health import probe_health

    times = []
    for _ in range(rounds):
        port = free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(HELLO)], env={**os.environ, "PORT": str(port)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not probe_health(f"http://127.0.0.1:{port}{path}", timeout=1.0):
            time.sleep(poll)
        times.append(time.perf_counter() - t0)
        proc.terminate()
        proc.wait()
    return times


class Clients:
    """One thread per url, each requesting it back to back; (time, status) of every answer."""

    def __init__(self, urls: list[str]) -> None:
        self.log: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(u,), daemon=True)
                         for u in urls]
        for t in self._threads:
            t.start()

    def _run(self, url: str) -> None:
        while not self._stop.is_set():
            status = get(url)
            self.log.append((time.monotonic(), status))

    def stop(self) -> list[tuple[float, int]]:
        """Stop the threads; every answer, in order."""
        self._stop.set()
        for t in self._threads:
            t.join(40)
        return list(self.log)


class Up:
    """``mycelium up --home HOME --edge-port PORT ARGS…`` in the background, until :meth:`stop`.

    Returns once the mesh printed ``mesh up``; a thread keeps reading its log after that (a full
    pipe would block the mesh's writes, and its shutdown).
    """

    def __init__(self, home: Path, *args: str, own_session: bool = False) -> None:
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(  # own_session: it leads a session, as under systemd
            [sys.executable, "-m", "mycelium", "up", "--home", str(home), "--edge-port",
             str(self.port), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=ENV, start_new_session=own_session)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "mesh up" in line:
                break
        else:
            raise SystemExit(f"{home.name}: the mesh did not come up")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.client = ControlClient(Home(home))

    def app(self, app: str) -> dict[str, Any]:
        """One app's status document (no instances and nothing desired when it is unknown)."""
        for doc in self.client.request("status", app=app)["apps"]:
            if doc["app"] == app:
                return dict(doc)
        return {"instances": [], "desired": 0}

    def ready(self, app: str) -> int:
        """How many instances of ``app`` are Ready."""
        return sum(1 for i in self.app(app)["instances"] if i["state"] == "Ready")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``mycelium ARGS… --home HOME`` (the CLI, as an operator would run it)."""
        return subprocess.run([sys.executable, "-m", "mycelium", *args, "--home",
                               str(self.home)], capture_output=True, text=True, env=ENV,
                              check=False)

    def stop(self, timeout: float = 180.0) -> None:
        """SIGTERM the mesh (if it still runs) and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
