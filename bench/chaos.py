"""Benchmark: chaos and crash loops under a steady load through the edge.

One command:

    python bench/chaos.py [--duration 30] [--interval 1] [--loop 15] [--solo-kills 10]
                          [--reset-after S]

A real ``mycelium up --nodes 3`` (shipped defaults: backoff 0.1 s doubling to 30 s).
1. ``mycelium chaos --interval 1 --duration 30 --seed 1`` on ``hello`` with 3 replicas while two
   keep-alive clients GET ``/hello/`` through the edge: success rate, kills, p50/p99 recovery
   (kill → a new Ready instance on the victim's node, as chaos measures it).
2. ``solo`` with 1 replica: kill -9 of its pid → the first 200 through the edge from a new pid
   (polled every 2 ms), the figure of the naive peer's ~310 ms.
3. ``crashy`` (crashes at start) beside ``hello`` for ``--loop`` s under load: hello's lost
   requests, the mesh process's CPU (psutil, % of one core), the backoff delays.
Prints figures and a final JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import psutil
from reliability_common import Load, Mesh, cli, publish_examples


def _solo_pid(port: int) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/solo/")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return int(json.loads(body)["pid"]) if resp.status == 200 else None
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--loop", type=float, default=15.0)
    parser.add_argument("--solo-kills", type=int, default=10)
    parser.add_argument("--reset-after", type=float, default=None,
                        help="[restart] reset_after (shipped 10 s): seconds up that reset backoff")
    args = parser.parse_args()
    out: dict[str, object] = {"bench": "chaos"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "home"
        digests = publish_examples(root)
        config = "" if args.reset_after is None else (
            f"[restart]\nreset_after = {args.reset_after}\n")
        mesh = Mesh(root, config)
        out["reset_after"] = args.reset_after if args.reset_after is not None else 10.0
        try:
            assert cli(root, "deploy", "hello", digests["v1"], "--max", "3").returncode == 0
            mesh.ready("hello", 3)
            # 1. chaos on 3 replicas under load
            with Load(mesh.port, "hello") as load:
                load.wait_requests(100)
                result = cli(root, "chaos", "--app", "hello", "--interval", str(args.interval),
                             "--duration", str(args.duration), "--seed", "1", "--json")
                load.wait_requests(100)
            summary = orjson.loads(result.stdout.splitlines()[-1])
            stats = load.stats
            total = stats.ok + stats.failed
            rate = 100.0 * stats.ok / total
            print(f"chaos {args.duration:g}s at 1 kill/{args.interval:g}s, 3 replicas: "
                  f"{summary['kills']} kills, {summary['recoveries']} recoveries; recovery p50 "
                  f"{summary['p50_ms']:.0f} ms, p99 {summary['p99_ms']:.0f} ms, slowest "
                  f"{summary['slowest_ms']:.0f} ms")
            print(f"  requests {total}, failed {stats.failed} -> success {rate:.3f} % "
                  f"{dict(stats.errors)}")
            out.update(chaos_kills=summary["kills"], chaos_recoveries=summary["recoveries"],
                       recovery_p50_ms=round(summary["p50_ms"], 1),
                       recovery_p99_ms=round(summary["p99_ms"], 1),
                       recovery_slowest_ms=round(summary["slowest_ms"], 1),
                       chaos_requests=total, chaos_failed=stats.failed,
                       chaos_success_pct=round(rate, 4))

            # 2. one replica: kill -9 -> replacement serving through the edge
            assert cli(root, "deploy", "solo", digests["solo"]).returncode == 0
            mesh.ready("solo", 1)
            solo: list[float] = []
            for _ in range(args.solo_kills):
                pid = _solo_pid(mesh.port)
                assert pid is not None
                time.sleep(1.0)  # let it be up a while: a first crash, no crash-loop backoff
                started = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                while True:
                    new = _solo_pid(mesh.port)
                    if new is not None and new != pid:
                        break
                    time.sleep(0.002)
                solo.append(time.monotonic() - started)
                # past reset_after: the next kill is a first crash too
                time.sleep((args.reset_after or 10.0) + 0.5)
            print(f"kill -9 -> replacement serving through the edge: median "
                  f"{statistics.median(solo) * 1000:.0f} ms, max {max(solo) * 1000:.0f} ms "
                  f"({len(solo)} kills)")
            out.update(solo_kills=len(solo),
                       solo_serving_median_ms=round(statistics.median(solo) * 1000, 1),
                       solo_serving_max_ms=round(max(solo) * 1000, 1))
            cli(root, "stop", "solo")

            # 3. a crash loop beside a healthy app
            proc = psutil.Process(mesh.proc.pid)
            with Load(mesh.port, "hello") as load:
                load.wait_requests(100)
                cpu0, t0 = proc.cpu_times(), time.monotonic()
                assert cli(root, "deploy", "crashy", digests["crashy"],
                           "--no-wait").returncode == 0
                time.sleep(args.loop)  # the measured window (not a synchronisation)
                cpu1, t1 = proc.cpu_times(), time.monotonic()
                state = mesh.app("crashy").get("state")
            cpu = 100.0 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (t1 - t0)
            logs = [orjson.loads(line) for line in
                    cli(root, "logs", "--json", "--app", "crashy").stdout.splitlines()]
            delays = [round(float(r["delay"]), 2) for r in logs if r["event"] == "backoff"]
            stats = load.stats
            print(f"crash loop {args.loop:g}s beside hello: hello lost {stats.failed} of "
                  f"{stats.ok + stats.failed} requests; mesh CPU {cpu:.1f} % of a core "
                  f"(with the load through its edge); crashy state {state}; backoff delays "
                  f"{delays}")
            out.update(loop_s=args.loop, loop_healthy_requests=stats.ok + stats.failed,
                       loop_healthy_failed=stats.failed, loop_mesh_cpu_pct=round(cpu, 1),
                       loop_state=state, loop_backoffs=delays)
            # the same window without load: the crash loop's own cost
            cpu0, t0 = proc.cpu_times(), time.monotonic()
            time.sleep(5.0)
            cpu1, t1 = proc.cpu_times(), time.monotonic()
            idle = 100.0 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (t1 - t0)
            print(f"  mesh CPU with the crash loop and no load: {idle:.1f} % of a core")
            out.update(loop_mesh_cpu_noload_pct=round(idle, 1))
        finally:
            mesh.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
