"""Benchmark: scale to zero, many instances per node, autoscaling and drains (a real mesh).

One command:

    python bench/scale.py [--cold 50] [--instances 1000] [--clients 50]

Measured like an operator would, through the edge and the control socket:
- cold start: ``examples/hello`` deployed ``--min 0 --idle 0.3``; each round waits until the
  app is idle (no instance), then times one request through the edge until its 200: p50/p99
  over ``--cold`` rounds, beside the workload's own exec → first 200 (spawned directly);
- many: ``--instances`` instances of one app on 3 nodes (a tiny C workload compiled here,
  ``bench/workloads/tiny/tiny.c``): all Ready after the deploy, the mesh's RSS, ``status
  --json`` through the CLI;
- autoscale: hello with ``--target-concurrency 5``, 1 → ``--clients`` concurrent clients on
  ``/slow?delay=0.1``: time to ``desired`` 10 and to 10 Ready; time back to ``min`` once the
  load stops;
- drain: 60 hello instances on 3 nodes (20 each), one node drained under load: failed
  requests and the time the drain took.

Prints figures and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from bench._common import (  # noqa: E402
    HELLO,
    Clients,
    Up,
    get,
    head_commit,
    hello_start_times,
    pct,
    wait,
)
from mycelium.home import Home  # noqa: E402
from mycelium.spores import keygen, publish  # noqa: E402

TINY_C = REPO / "bench" / "workloads" / "tiny" / "tiny.c"


class Mesh(Up):
    """``mycelium up --nodes 3 --config CONFIG`` in the background on a temporary home."""

    def __init__(self, home: Path, config: Path) -> None:
        super().__init__(home, "--nodes", "3", "--config", str(config))


def bench_cold(mesh: Mesh, home: Home, rounds: int) -> dict[str, Any]:
    digest = publish(home, binary=HELLO, manifest={"name": "cold", "version": "1"})
    mesh.client.request("deploy", app="cold", digest=digest, min=0, max=1, idle=0.3)
    times = []
    for _ in range(rounds):
        wait(lambda: mesh.app("cold").get("state") == "idle"
             and not mesh.app("cold")["instances"], 30, interval=0.02)
        t0 = time.perf_counter()
        status = get(f"{mesh.url}/cold/")
        times.append(time.perf_counter() - t0)
        if status != 200:
            raise SystemExit(f"cold start answered {status}")
    mesh.client.request("stop", app="cold")
    direct = hello_start_times(10, "/", 0.005)
    out = {"cold_p50_ms": round(pct(times, 50) * 1000, 1),
           "cold_p99_ms": round(pct(times, 99) * 1000, 1),
           "hello_exec_to_200_p50_ms": round(statistics.median(direct) * 1000, 1)}
    print(f"cold start through the edge ({rounds} rounds): p50 {out['cold_p50_ms']} ms, "
          f"p99 {out['cold_p99_ms']} ms; hello's own exec → first 200 p50 "
          f"{out['hello_exec_to_200_p50_ms']} ms")
    return out


def bench_many(mesh: Mesh, home: Home, tmp: Path, n: int) -> dict[str, Any]:
    binary = tmp / "tiny"
    subprocess.run(["gcc", "-O2", "-s", "-o", str(binary), str(TINY_C)], check=True)
    digest = publish(home, binary=binary, manifest={"name": "tiny", "version": "1",
                                                    "health": "/"})
    t0 = time.perf_counter()
    mesh.client.request("deploy", app="tiny", digest=digest, min=n, max=n, cpu=0.001, mem=8)
    wait(lambda: mesh.ready("tiny") == n, 300, interval=0.1)
    ready = time.perf_counter() - t0
    rss = psutil.Process(mesh.proc.pid).memory_info().rss / 1048576
    walls = []
    for _ in range(5):
        t = time.perf_counter()
        mesh.cli("status", "--json")
        walls.append(time.perf_counter() - t)
    per_node: dict[str, int] = {}
    for i in mesh.app("tiny")["instances"]:
        per_node[i["node"]] = per_node.get(i["node"], 0) + 1
    out = {"many_instances": n, "many_ready_s": round(ready, 2), "many_per_node": per_node,
           "many_mesh_rss_mb": round(rss), "many_status_cli_p50_s":
           round(statistics.median(walls), 3)}
    print(f"{n} instances of one app on 3 nodes ({per_node}): all Ready {ready:.2f} s after "
          f"the deploy; mesh RSS {rss:.0f} MB; `status --json` CLI p50 "
          f"{statistics.median(walls):.3f} s")
    t = time.perf_counter()
    mesh.client.request("stop", app="tiny")
    wait(lambda: not mesh.app("tiny")["instances"], 300, interval=0.2)
    out["many_stop_s"] = round(time.perf_counter() - t, 2)
    return out


def bench_autoscale(mesh: Mesh, digest: str, clients: int) -> dict[str, Any]:
    mesh.client.request("deploy", app="hello", digest=digest, min=1, max=20, cpu=0.01,
                        mem=32, target_concurrency=5)
    wait(lambda: mesh.ready("hello") == 1, 30, interval=0.02)
    load = Clients([f"{mesh.url}/hello/slow?delay=0.1"] * clients)
    t0 = time.perf_counter()
    wait(lambda: mesh.app("hello")["desired"] >= 10, 30, interval=0.02)
    to_desired = time.perf_counter() - t0
    wait(lambda: mesh.ready("hello") >= 10, 30, interval=0.02)
    to_ready = time.perf_counter() - t0
    statuses = dict(Counter(s for _, s in load.stop()))
    t1 = time.perf_counter()
    wait(lambda: mesh.app("hello")["desired"] == 1 and mesh.ready("hello") == 1, 120,
         interval=0.1)
    back = time.perf_counter() - t1
    out = {"autoscale_to_desired_10_s": round(to_desired, 2),
           "autoscale_to_10_ready_s": round(to_ready, 2), "autoscale_back_to_min_s":
           round(back, 1), "autoscale_statuses": statuses}
    print(f"autoscale 1 → {clients} clients, C=5: desired ≥ 10 after {to_desired:.2f} s, "
          f"10 Ready after {to_ready:.2f} s; back to min {back:.1f} s after the load stopped "
          f"(answers {statuses})")
    mesh.client.request("stop", app="hello")
    wait(lambda: not mesh.app("hello")["instances"], 60, interval=0.1)
    return out


def bench_drain(mesh: Mesh, digest: str) -> dict[str, Any]:
    mesh.client.request("deploy", app="hello", digest=digest, min=60, max=60, cpu=0.01,
                        mem=32)
    wait(lambda: mesh.ready("hello") == 60, 120, interval=0.1)
    on_node: dict[str, int] = {}
    for i in mesh.app("hello")["instances"]:
        on_node[i["node"]] = on_node.get(i["node"], 0) + 1
    node = max(on_node, key=lambda n: on_node[n])
    load = Clients([f"{mesh.url}/hello/"] * 8)
    time.sleep(1.0)  # a measuring window: load flowing before the drain
    t0 = time.perf_counter()
    result = mesh.cli("node", "drain", node, "--timeout", "120")
    took = time.perf_counter() - t0
    time.sleep(1.0)  # and after it
    statuses = dict(Counter(s for _, s in load.stop()))
    failed = sum(n for s, n in statuses.items() if s != 200)
    out = {"drain_node_instances": on_node[node], "drain_s": round(took, 2),
           "drain_exit": result.returncode, "drain_requests": sum(statuses.values()),
           "drain_failed_requests": failed}
    print(f"drain of {node} ({on_node[node]} instances) under load: {took:.2f} s, exit "
          f"{result.returncode}; {sum(statuses.values())} requests, {failed} failed")
    mesh.cli("node", "undrain", node)
    mesh.client.request("stop", app="hello")
    wait(lambda: not mesh.app("hello")["instances"], 120, interval=0.1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=50)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--only", choices=("cold", "autoscale", "drain", "many"), default=None,
                        help="run one part only")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    home = Home(tmp / "home").ensure()
    keygen(home)
    config = tmp / "mycelium.toml"
    # 1000 workloads on 2 cores: probe each every 5 s (1000 probes a second would be the load)
    config.write_text("[instance]\nstop_grace = 1.0\nhealth_interval = 5.0\nhealth_timeout = 2.0\n")
    digest = publish(home, binary=HELLO, manifest={"name": "hello", "version": "1.0.0"})
    commit = head_commit()
    result: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "commit": commit,
                              "load_at_start": round(os.getloadavg()[0], 2)}
    mesh = Mesh(home.root, config)
    try:
        if args.only in (None, "cold"):
            result.update(bench_cold(mesh, home, args.cold))
        if args.only in (None, "autoscale"):
            result.update(bench_autoscale(mesh, digest, args.clients))
        if args.only in (None, "drain"):
            result.update(bench_drain(mesh, digest))
        if args.only in (None, "many"):
            result.update(bench_many(mesh, home, tmp, args.instances))
    finally:
        mesh.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
