"""Benchmark: the live dashboard of a running mesh (a real ``mycelium up --ui-port`` subprocess).

One command:

    python bench/dashboard.py [--kills 10] [--idle 15]

Measured from outside, the way a browser sees it: an SSE client on ``/api/events`` (raw socket,
no browser, so the figures are the server's) and ``kill -9`` of hello instances on a 3-node mesh:
- push latency: ``kill -9`` → the ``child_terminated`` record on the stream, → the
  ``child_restarted`` record, → a ``state`` event whose tree shows the replacement Ready with
  its new pid; and that last one against the mesh's own ``ready_at`` (the dashboard's lag);
  the mesh runs with ``restart.reset_after = 0.2`` so that every kill is a first crash (the
  shipped 0.1 s first backoff, not a crash loop's growing one);
- cost: the mesh process's CPU time (user + system, all its threads) over ``--idle`` seconds of
  an idle mesh, with the dashboard off, on with no browser, and on with one browser watching;
  and the bytes pushed to that browser per second.
Prints figures and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import psutil  # noqa: E402

from bench._common import free_port, pct  # noqa: E402
from mycelium.home import Home  # noqa: E402
from mycelium.spores import keygen, publish  # noqa: E402

HELLO = REPO / "examples" / "hello" / "hello"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("MYCELIUM_")}
ENV["PYTHONPATH"] = str(REPO)
ENV["MYCELIUM_RESTART_RESET_AFTER"] = "0.2"


class Mesh:
    def __init__(self, home: Path, ui: bool) -> None:
        self.home = home
        self.ui_port = free_port() if ui else 0
        args = [sys.executable, "-m", "mycelium", "up", "--home", str(home), "--nodes", "3",
                "--edge-port", str(free_port()), "--ui-port", str(self.ui_port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=ENV)
        assert self.proc.stdout is not None
        seen = []
        for line in self.proc.stdout:
            seen.append(line)
            if "mesh up" in line:
                break
        else:
            raise SystemExit("the mesh did not start:\n" + "".join(seen[-20:]))
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "mycelium", *args, "--home",
                               str(self.home)], capture_output=True, text=True, env=ENV,
                              check=True)
        return done.stdout

    def cpu(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


class Stream:
    """An SSE client: (monotonic time, event, data) tuples on ``events``; bytes counted."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.events: queue.Queue[tuple[float, str, Any]] = queue.Queue()
        self.bytes = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            self.bytes += len(chunk)
            buf += chunk
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                name = data = None
                for line in block.split(b"\n"):
                    line = line.rstrip(b"\r")
                    if line.startswith(b"event: "):
                        name = line[7:].decode()
                    elif line.startswith(b"data: "):
                        data = line[6:]
                if name and data is not None:
                    self.events.put((now, name, orjson.loads(data)))
                # chunk-size lines of the chunked coding land in `block` as noise: ignored

    def close(self) -> None:
        self.sock.close()


READY_AT: dict[int, float] = {}  # pid -> the mesh's own ready_at (epoch)


def instance_pids(view: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}

    def walk(node: dict[str, Any]) -> None:
        if "/apps/hello/" in node["path"] and node.get("pid") and node["state"] == "Ready":
            out[node["path"]] = node["pid"]
            if node.get("ready_at"):
                READY_AT[node["pid"]] = node["ready_at"]
        for child in node.get("children") or ():
            walk(child)
    if view.get("tree"):
        walk(view["tree"])
    return out


def measure_kills(mesh: Mesh, kills: int) -> dict[str, list[float]]:
    stream = Stream(mesh.ui_port)
    latest: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while len(latest) < 3 and time.monotonic() < deadline:
        _, name, data = stream.events.get(timeout=30)
        if name == "state":
            latest = instance_pids(data)
    results: dict[str, list[float]] = {"terminated": [], "restarted": [], "new_pid": [],
                                       "ready_lag": []}
    for n in range(kills):
        path = sorted(latest)[n % 3]
        old = latest[path]
        time.sleep(0.3)
        while not stream.events.empty():
            _, name, data = stream.events.get()
            if name == "state":
                latest = instance_pids(data) or latest
        path = sorted(latest)[n % 3]
        old = latest[path]
        child = path.rsplit("/", 1)[1]
        start = time.monotonic()
        os.kill(old, signal.SIGKILL)
        seen: dict[str, float] = {}
        while len(seen) < 3:
            t, name, data = stream.events.get(timeout=10)
            if name == "log" and data.get("child") == child:
                if data["event"] == "child_terminated":
                    seen.setdefault("terminated", t - start)
                elif data["event"] == "child_restarted":
                    seen.setdefault("restarted", t - start)
            elif name == "state":
                pids = instance_pids(data)
                if pids.get(path) not in (None, old):
                    seen.setdefault("new_pid", t - start)
                    latest = pids
                    # wall clock now vs the mesh's ready_at: how late the page learnt it
                    lag = time.time() - (time.monotonic() - t) - READY_AT.get(pids[path], 0)
                    if lag < 60:
                        results["ready_lag"].append(lag * 1000)
        for key, value in seen.items():
            results[key].append(value * 1000)
    stream.close()
    return results


def idle_cpu(mesh: Mesh, seconds: float, watch: bool) -> tuple[float, float]:
    stream = Stream(mesh.ui_port) if watch else None
    time.sleep(1.0)
    before_cpu, before_bytes, t0 = mesh.cpu(), stream.bytes if stream else 0, time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    cpu = (mesh.cpu() - before_cpu) / dt * 100
    rate = ((stream.bytes - before_bytes) / dt) if stream else 0.0
    if stream:
        stream.close()
    return cpu, rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--idle", type=float, default=15.0)
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "home"
        home = Home(root).ensure()
        keygen(home)
        digest = publish(home, binary=HELLO, manifest={"name": "hello", "version": "1.0.0"})
        figures: dict[str, Any] = {}
        for label, ui, watch in (("off", False, False), ("on, no browser", True, False),
                                 ("on, 1 browser", True, True)):
            mesh = Mesh(root, ui)
            try:
                mesh.cli("deploy", "hello", digest, "--max", "3")
                cpu, rate = idle_cpu(mesh, args.idle, watch)
                figures[f"idle_cpu_percent[{label}]"] = round(cpu, 2)
                if watch:
                    figures["pushed_bytes_per_s[1 browser, idle]"] = round(rate)
                print(f"idle mesh CPU, dashboard {label}: {cpu:.2f}% of one core"
                      + (f", {rate:.0f} B/s pushed" if watch else ""), flush=True)
                if watch:
                    res = measure_kills(mesh, args.kills)
                    for key, values in res.items():
                        if values:
                            figures[f"{key}_ms_p50"] = round(statistics.median(values), 1)
                            figures[f"{key}_ms_max"] = round(max(values), 1)
                            print(f"kill -9 -> {key} on the stream: p50 "
                                  f"{statistics.median(values):.1f} ms, p95 "
                                  f"{pct(values, 95):.1f} ms, max {max(values):.1f} ms "
                                  f"({len(values)} kills)", flush=True)
            finally:
                mesh.stop()
        figures["load_start_end"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        print(json.dumps({"bench": "dashboard", **figures}))


if __name__ == "__main__":
    main()
