"""Benchmark: what canaries cost the edge, and how fast a bad canary leaves the routes.

One command:

    python bench/canary.py [--duration 5] [--rounds 3] [--connections 32] [--rate 200]

1. **Weighted routing cost.** One EdgeServer (as the mesh runs it) with two routes over the same
   aiohttp backend (two endpoints each, both on it, so that the backend's load is the same):
   ``plain`` (round-robin) and ``weighted`` (a canary's route: endpoints with digests and
   weights 30/70, so smooth weighted round-robin picks and every answer is counted per
   digest). wrk alternates between them, round after round, in the same run; the
   figure is the ratio of the median req/s (goal: weighted ≥ 97 % of plain).
   Because wrk, the edge and the backend share the machine's cores with everything else, the
   bench also times the per-request decision alone (balancer order + answer count, plain vs
   weighted, in-process, best of 5) and relates the difference to the edge's cost per request.
2. **Revert detection.** A real ``mycelium up --nodes 3``: ``web`` v1 on 3 nodes, then a canary
   (``--canary 1``) that answers 500 to every request, under a paced load of ``--rate`` req/s
   through the edge. The figure is the time from the canary's 20th 500 (as the client saw it)
   to its last one (after which no request reached it: it left the routes); goal ≤ 2 s.

Needs ``wrk`` (``apt-get install -y wrk``). Prints figures and a final JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edge import free_port, spawn, stop, wait_port, wrk
from reliability_common import Mesh, cli

HERE = Path(__file__).resolve()
REL = HERE.parents[1] / "tests" / "reliability" / "workloads" / "rel"


def run_edge(port: int, backends: list[int]) -> None:
    """The edge with a plain and a weighted route over the same backends (``--role edge``)."""
    sys.path.insert(0, str(HERE.parents[1]))
    from mycelium.edge import EdgeConfig, EdgeServer, Endpoint, Route, RouteTable

    server = EdgeServer(EdgeConfig(port=port, edge_id="bench-canary"))
    server.start()
    urls = [f"http://127.0.0.1:{b}" for b in backends] * (2 if len(backends) == 1 else 1)
    plain = Route("plain", tuple(Endpoint(u, f"plain#{k}") for k, u in enumerate(urls)))
    weighted = Route("weighted", (Endpoint(urls[0], "w#0", "b" * 64, 30 * 1),
                                  Endpoint(urls[1], "w#1", "a" * 64, 70 * 1)))
    server.set_routes(RouteTable({"plain": plain, "weighted": weighted}))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop(1.0)


def weighted_cost(duration: float, rounds: int, connections: int) -> dict[str, Any]:
    """Alternate wrk rounds over the plain and the weighted route of one edge."""
    backends = [free_port()]
    port = free_port()
    procs = [spawn([sys.executable, str(HERE.parent / "edge.py"), "--role", "backend",
                    "--port", str(b)]) for b in backends]
    try:
        for proc, b in zip(procs, backends, strict=True):
            wait_port(b, proc)
        edge = spawn([sys.executable, str(HERE), "--role", "edge", "--port", str(port),
                      "--backends", ",".join(map(str, backends))])
        procs.append(edge)
        wait_port(port, edge)
        for name in ("plain", "weighted"):  # warm both routes' connection pools
            wrk(f"http://127.0.0.1:{port}/{name}/", 1.0, connections)
        rps: dict[str, list[float]] = {"plain": [], "weighted": []}
        for k in range(rounds):
            order = ("plain", "weighted") if k % 2 == 0 else ("weighted", "plain")
            for name in order:
                res = wrk(f"http://127.0.0.1:{port}/{name}/", duration, connections)
                if res["non2xx"] or res["socket_errors"]:
                    raise SystemExit(f"{name}: errors in round {k + 1}: {res}")
                rps[name].append(res["rps"])
                print(f"round {k + 1} {name:8}: {res['rps']:8.0f} req/s  "
                      f"p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms")
    finally:
        for proc in reversed(procs):
            stop(proc)
    plain, weighted = statistics.median(rps["plain"]), statistics.median(rps["weighted"])
    ratio = weighted / plain
    print(f"weighted/plain throughput: {ratio:.3f} ({weighted:.0f} vs {plain:.0f} req/s, "
          f"medians of {rounds}); cost {100 * (1 - ratio):.1f} %")
    return {"plain_rps": rps["plain"], "weighted_rps": rps["weighted"],
            "weighted_ratio": round(ratio, 4), "cost_percent": round(100 * (1 - ratio), 2)}


def decision_cost(plain_rps: float, n: int = 200_000) -> dict[str, float]:
    """Microseconds per request of the balancer's choice (and, weighted, the answer count)."""
    sys.path.insert(0, str(HERE.parents[1]))
    from mycelium.edge.answers import AnswerWindow
    from mycelium.edge.balancer import Balancer
    from mycelium.edge.routes import Endpoint, Route

    url = "http://127.0.0.1:1"
    plain = Route("plain", (Endpoint(url, "a"), Endpoint(url, "b")))
    weighted = Route("weighted", (Endpoint(url, "a", "b" * 64, 30),
                                  Endpoint(url, "b", "a" * 64, 70)))
    balancer, window = Balancer(), AnswerWindow()
    best = {"plain": float("inf"), "weighted": float("inf")}
    for _ in range(5):
        for name, route in (("plain", plain), ("weighted", weighted)):
            started = time.perf_counter()
            for _k in range(n):
                ep = balancer.order(route)[0]
                if ep.digest:
                    window.count("weighted", ep.digest, 200)
            best[name] = min(best[name], (time.perf_counter() - started) / n * 1e6)
    extra = best["weighted"] - best["plain"]
    per_request = 1e6 / plain_rps  # the edge's whole cost of one request at that throughput
    print(f"decision per request: plain {best['plain']:.2f} us, weighted {best['weighted']:.2f} "
          f"us: +{extra:.2f} us = {100 * extra / per_request:.2f} % of the {per_request:.0f} us "
          f"a request costs the edge at {plain_rps:.0f} req/s")
    return {"decision_plain_us": round(best["plain"], 3),
            "decision_weighted_us": round(best["weighted"], 3),
            "decision_cost_percent": round(100 * extra / per_request, 3)}


class PacedLoad:
    """``rate`` requests per second over ``threads`` keep-alive connections (each paced, so a
    slow answer does not slow the others); (time, status) of each answer."""

    def __init__(self, port: int, app: str, rate: float, threads: int = 8) -> None:
        self.port, self.app, self.interval = port, app, threads / rate
        self.answers: list[tuple[float, int]] = []
        self.failures = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> PacedLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                conn.request("GET", f"/{self.app}/")
                resp = conn.getresponse()
                resp.read()
                self.answers.append((time.monotonic(), resp.status))
            except (OSError, http.client.HTTPException):
                self.failures += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            due += self.interval
            time.sleep(max(0.0, due - time.monotonic()))
        conn.close()


def revert_detection(rate: float) -> dict[str, object]:
    """The time from a bad canary's 20th 500 to its last, under ``rate`` req/s."""
    from mycelium.home import Home
    from mycelium.spores import keygen, publish

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "home"
        home = Home(root).ensure()
        keygen(home)
        good = publish(home, binary=REL, manifest={"name": "web", "version": "1.0.0"})
        bad = publish(home, binary=REL, manifest={"name": "web", "version": "1.0.1",
                                                  "env": {"REL_MODE": "errors"}})
        mesh = Mesh(root, "[instance]\nhealth_interval = 0.2\n")
        try:
            if cli(root, "deploy", "web", good, "--min", "3", "--max", "3").returncode:
                raise SystemExit("deploy of v1 failed")
            mesh.ready("web", 3)
            with PacedLoad(mesh.port, "web", rate) as load:
                time.sleep(2.0)  # the load settles before the canary starts
                started = time.monotonic()
                settled = len(load.answers) / 2.0
                result = cli(root, "deploy", "web", bad, "--min", "3", "--max", "3",
                             "--canary", "1")
                if result.returncode:
                    raise SystemExit(f"canary deploy failed: {result.stderr}")
                deadline = time.monotonic() + 30
                while mesh.app("web").get("state") != "failed":
                    if time.monotonic() > deadline:
                        raise SystemExit(f"the canary was not reverted: {mesh.app('web')}")
                    time.sleep(0.05)
                failed_at = time.monotonic()
                time.sleep(2.0)  # would a request still reach the canary?
            doc = mesh.app("web")
        finally:
            mesh.stop()
    errors = [t for t, status in load.answers if status >= 500 and t >= started]
    if len(errors) < 20:
        raise SystemExit(f"only {len(errors)} 500s seen")
    after = errors[-1] - errors[19]
    span = load.answers[-1][0] - load.answers[0][0]
    print(f"load: {len(load.answers) / span:.0f} req/s measured over the run "
          f"({settled:.0f} in its first 2 s), {load.failures} failed "
          f"connections; canary 500s seen: {len(errors)}")
    print(f"revert detection: last 500 {after:.2f} s after the 20th; app failed "
          f"{failed_at - errors[19]:.2f} s after it (status polled); reason: {doc['reason']}")
    return {"rate": rate, "canary_500s": len(errors), "out_of_routes_s": round(after, 3),
            "failed_in_status_s": round(failed_at - errors[19], 3),
            "measured_rate": round(len(load.answers) / span, 1)}


def main() -> None:
    """Parse arguments, run both parts, print the figures and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--role", choices=["edge"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--backends")
    args = parser.parse_args()
    if args.role == "edge":
        run_edge(args.port, [int(b) for b in args.backends.split(",")])
        return
    if shutil.which("wrk") is None:
        raise SystemExit("missing wrk: run `apt-get install -y wrk`")
    cost = weighted_cost(args.duration, args.rounds, args.connections)
    decision = decision_cost(max(cost["plain_rps"]))
    revert = revert_detection(args.rate)
    print(json.dumps({"bench": "canary", **cost, **decision, **revert,
                      "goals": {"cost_percent_max": 3.0, "out_of_routes_s_max": 2.0}}))


if __name__ == "__main__":
    main()
