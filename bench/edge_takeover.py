"""Benchmark: kill -9 of the mesh under load through the edge workers, then the next ``up``.

One command, the change and its anchor side by side (the same script, machine and load):

    python bench/edge_takeover.py [--gap 3] [--after 5] [--clients 4] [--anchor /work/main]

A real ``mycelium up --nodes 2`` with ``[edge] workers = 2`` on a temporary home, ``hello``
deployed ``--min 2 --max 2``; ``--clients`` keep-alive clients GET ``/hello/`` through the
edge (a failed request reconnects). Phases: ``before`` (5 s of load), ``orphaned`` (the mesh
kill -9'd, ``--gap`` s without a mesh), ``takeover`` (the next ``up`` on the same home and
port until its instances took over: the line that says the old ones were reaped), ``after``
(``--after`` s). Per phase: requests, failures, req/s, p50/p99 latency. The anchor is the same
run with ``--anchor``'s code on ``PYTHONPATH`` (default: no anchor run). Prints a table and a
final JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import free_port, pct  # noqa: E402
from mycelium.home import Home  # noqa: E402
from mycelium.operator.client import ControlClient  # noqa: E402
from mycelium.spores import keygen, publish  # noqa: E402

PHASES = ("before", "orphaned", "takeover", "after")


class Load:
    """Keep-alive clients; each answer is noted as (phase, ok, seconds)."""

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.phase = "before"
        self.samples: list[tuple[str, bool, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            phase, start = self.phase, time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/hello/")
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.samples.append((phase, ok, time.perf_counter() - start))
            if not ok:
                time.sleep(0.01)  # a refused connect returns at once: do not spin

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


class Up:
    """``mycelium up`` with the given code on ``PYTHONPATH``; its output lines are kept."""

    def __init__(self, repo: Path, home: Path, port: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(repo)}
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mycelium", "up", "--home", str(home), "--edge-port",
             str(port), "--nodes", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env, cwd=repo)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait(self, text: str, timeout: float = 120.0) -> float:
        """Block until a line holds ``text``; returns when (monotonic)."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"no {text!r} line; got:\n{''.join(self.lines[-20:])}")
            time.sleep(0.01)
        return time.monotonic()


def cli(repo: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mycelium", *args, "--home", str(home)],
                          capture_output=True, text=True, check=False, timeout=300, cwd=repo,
                          env={**os.environ, "PYTHONPATH": str(repo)})


def ready(home: Path, count: int, timeout: float = 60.0) -> None:
    """Block until ``count`` instances of hello are Ready (the control socket's status)."""
    client = ControlClient(Home(home))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            apps = client.request("status", app="hello")["apps"]
            if sum(1 for a in apps for i in a["instances"] if i["state"] == "Ready") >= count:
                return
        except Exception:  # the mesh is starting
            pass
        time.sleep(0.1)
    raise SystemExit("hello never got Ready")


def run(repo: Path, gap: float, after: float, clients: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "home"
        home = Home(root).ensure()
        keygen(home)
        digest = publish(home, binary=REPO / "examples" / "hello" / "hello",
                         manifest={"name": "hello", "version": "1.0.0"})
        (root / "mycelium.toml").write_text("[edge]\nworkers = 2\n")
        port = free_port()
        mesh = Up(repo, root, port)
        mesh.wait("mesh up")
        assert cli(repo, root, "deploy", "hello", digest, "--min", "2", "--max", "2"
                   ).returncode == 0
        ready(root, 2)
        time.sleep(0.5)  # the routes reach both workers (bench only)
        load = Load(port, clients)
        times: dict[str, float] = {"before": time.monotonic()}
        try:
            time.sleep(5.0)  # bench: a steady phase
            load.phase = "orphaned"
            times["orphaned"] = time.monotonic()
            mesh.proc.send_signal(signal.SIGKILL)
            mesh.proc.wait(10)
            time.sleep(gap)
            load.phase = "takeover"
            times["takeover"] = time.monotonic()
            mesh = Up(repo, root, port)
            mesh.wait("mesh up")
            ready(root, 2)
            marker = "once ours took over" if repo == REPO else "mesh up"
            mesh.wait(marker)
            load.phase = "after"
            times["after"] = time.monotonic()
            time.sleep(after)
            times["end"] = time.monotonic()
        finally:
            load.stop()
            mesh.proc.send_signal(signal.SIGTERM)
            mesh.proc.wait(60)
            cli(repo, root, "down")  # whatever a killed mesh left (the anchor's workloads)
    result: dict[str, object] = {}
    bounds = [*PHASES, "end"]
    for phase, nxt in zip(PHASES, bounds[1:], strict=False):
        rows = [s for s in load.samples if s[0] == phase]
        lat = [s[2] * 1000 for s in rows if s[1]]
        seconds = times[nxt] - times[phase]
        result[phase] = {"requests": len(rows), "failed": sum(1 for s in rows if not s[1]),
                         "seconds": round(seconds, 2),
                         "rps": round(len(lat) / seconds, 1) if seconds > 0 else 0.0,
                         "p50_ms": round(pct(lat, 50), 2) if lat else None,
                         "p99_ms": round(pct(lat, 99), 2) if lat else None}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gap", type=float, default=3.0)
    parser.add_argument("--after", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--anchor", type=Path, default=None)
    args = parser.parse_args()
    out: dict[str, object] = {"bench": "edge_takeover", "gap": args.gap}
    runs = [("this", REPO)] + ([("anchor", args.anchor.resolve())] if args.anchor else [])
    for name, repo in runs:
        out[name] = result = run(repo, args.gap, args.after, args.clients)
        print(f"{name} ({repo}):")
        print(f"  {'phase':<9} {'requests':>8} {'failed':>7} {'seconds':>7} {'req/s':>7} "
              f"{'p50 ms':>7} {'p99 ms':>7}")
        for phase in PHASES:
            r = result[phase]  # type: ignore[index]
            print(f"  {phase:<9} {r['requests']:>8} {r['failed']:>7} {r['seconds']:>7} "
                  f"{r['rps']:>7} {r['p50_ms']!s:>7} {r['p99_ms']!s:>7}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
