"""Benchmark: the running mesh end to end (a real ``mycelium up`` subprocess).

One command:

    python bench/mesh.py [--kills 20] [--apps 100] [--backoff-base 0.01] [--own-session]

Measured through the control socket and the edge, like an operator would:
- exit detection: ``kill -9`` of a workload → its endpoint is gone from ``status`` (polled
  back to back over the control socket, ~1 ms per poll), p50/p95 over ``--kills`` kills;
- respawn: ``kill -9`` → a replacement Ready (new pid, same node), and the same minus the
  workload's own start-to-healthy time (``examples/hello`` spawned and probed directly);
- deploy: ``mycelium deploy hello --min 3 --max 3`` (the CLI, wall time, waits for 3/3 Ready),
  and 3/3 Ready measured from the control request;
- scale: ``--apps`` apps x 3 nodes of examples/hello: time to all Ready after the last
  deploy, the mesh's CPU during the scale-up, its RSS and threads when all are Ready and once
  the burst's pool workers are gone, its CPU over 10 s of steady state, ``status --json`` over
  the socket and through the CLI.

``--backoff-base`` sets ``restart.backoff_base`` (the delay before the first respawn; the
shipped default is 0.1 s) and ``--reset-after`` ``restart.reset_after``; each kill waits until
its victim has been up that long, so every kill is a first crash (no crash-loop backoff).
Prints figures and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from bench._common import ENV, HELLO, Up, head_commit, hello_start_times, pct, wait  # noqa: E402
from mycelium.home import Home  # noqa: E402
from mycelium.spores import keygen, publish  # noqa: E402


class Mesh(Up):
    """``mycelium up --nodes 3 --config CONFIG`` on ``home`` (what bench/checks.py runs too)."""

    def __init__(self, home: Path, config: Path, own_session: bool = False) -> None:
        super().__init__(home, "--nodes", "3", "--config", str(config), own_session=own_session)


def bench_kills(mesh: Mesh, kills: int, reset_after: float) -> dict[str, Any]:
    detect: list[float] = []
    respawn: list[float] = []
    restart: list[float] = []
    launch: list[float] = []
    for n in range(kills):
        node = f"node-{n % 3 + 1}"
        victim = next(i for i in mesh.app("hello")["instances"]
                      if i["node"] == node and i["state"] == "Ready")
        # pacing, not synchronisation: let the victim outlive restart.reset_after so that
        # every kill is a first crash (backoff step 0), not a crash loop
        up_for = time.time() - (victim["ready_at"] or 0.0)
        time.sleep(max(0.0, reset_after + 0.05 - up_for))
        t0, killed_at = time.perf_counter(), time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        wait(lambda v=victim: all(i["id"] != v["id"] or i["state"] != "Ready"
                                  for i in mesh.app("hello")["instances"]))
        detect.append(time.perf_counter() - t0)
        new = wait(lambda v=victim: next((i for i in mesh.app("hello")["instances"]
                                          if i["node"] == v["node"] and i["state"] == "Ready"
                                          and i["pid"] != v["pid"]), None))
        respawn.append(time.perf_counter() - t0)
        # the same clock on both sides: kill → replacement actor started → Ready
        restart.append(new["started_at"] - killed_at)
        launch.append(new["ready_at"] - new["started_at"])
        wait(lambda: len([i for i in mesh.app("hello")["instances"]
                          if i["state"] == "Ready"]) == 3)
    return {"detect": detect, "respawn": respawn, "restart": restart, "launch": launch}


def deploy_all(mesh: Mesh, digests: list[str], prefix: str = "app") -> tuple[float, float]:
    """Deploy ``prefix<n>`` x 3 nodes for each digest and wait until all are Ready.

    Returns:
        Seconds the deploys took, and seconds from the last deploy to all Ready.
    """
    t0 = time.perf_counter()
    for n, d in enumerate(digests):
        mesh.client.request("deploy", app=f"{prefix}{n}", digest=d, min=1, max=3,
                            cpu=0.01, mem=64)
    last = time.perf_counter()
    want = len(digests) * 3

    def all_ready() -> bool:
        docs = mesh.client.request("status")["apps"]
        return sum(1 for a in docs for i in a["instances"] if i["state"] == "Ready") == want

    wait(all_ready, 300, interval=0.05)
    return last - t0, time.perf_counter() - last


def settle(proc: psutil.Process) -> None:
    """Wait until the pool's workers from a start burst have gone back (idle 5 s)."""
    wait(lambda: proc.num_threads() <= 40, 30, interval=0.5)


def steady_cpu(proc: psutil.Process, seconds: float) -> float:
    """The mesh's CPU over the next ``seconds`` (user + system), in % of one core."""
    c0 = proc.cpu_times()
    time.sleep(seconds)  # a measuring window, not a synchronisation
    c1 = proc.cpu_times()
    return ((c1.user - c0.user) + (c1.system - c0.system)) / seconds * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--backoff-base", type=float, default=0.01)
    parser.add_argument("--reset-after", type=float, default=0.5)
    parser.add_argument("--own-session", action="store_true",
                        help="start the mesh in a session of its own, as systemd does (then "
                             "[mesh] control_nice also lowers its session's autogroup)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-mesh-"))
    home = Home(tmp / "home").ensure()
    keygen(home)
    config = tmp / "mycelium.toml"
    config.write_text(f"[restart]\nbackoff_base = {args.backoff_base}\n"
                      f"backoff_cap = {max(args.backoff_base, 30.0)}\n"
                      f"reset_after = {args.reset_after}\n")
    digest = publish(home, binary=HELLO, manifest={"name": "hello", "version": "1.0.0"})
    # polled every 10 ms, the same period as the mesh's startup probe
    own_start = statistics.median(hello_start_times(10, "/health", 0.01))
    print(f"examples/hello start-to-healthy (direct spawn): {own_start * 1000:.1f} ms")

    mesh = Mesh(home.root, config, args.own_session)
    commit = head_commit()
    result: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "commit": commit,
                              "load_at_start": round(os.getloadavg()[0], 2),
                              "backoff_base": args.backoff_base,
                              "reset_after": args.reset_after,
                              "own_session": args.own_session,
                              "hello_start_to_healthy_ms": round(own_start * 1000, 1)}
    try:
        # deploy 3/3 through the CLI (wall time, includes the CLI's own start-up)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mycelium", "deploy", "hello", digest, "--min",
                        "3", "--max", "3", "--home", str(home.root)], check=True, env=ENV,
                       capture_output=True)
        cli_deploy = time.perf_counter() - t0
        mesh.client.request("stop", app="hello")
        wait(lambda: not mesh.app("hello")["instances"])
        t0 = time.perf_counter()
        mesh.client.request("deploy", app="hello", digest=digest, min=3, max=3)
        wait(lambda: len([i for i in mesh.app("hello")["instances"]
                          if i["state"] == "Ready"]) == 3)
        api_deploy = time.perf_counter() - t0
        print(f"deploy 3/3 Ready: CLI wall {cli_deploy * 1000:.0f} ms, "
              f"from the control request {api_deploy * 1000:.0f} ms")
        result.update(deploy_cli_ms=round(cli_deploy * 1000),
                      deploy_api_ms=round(api_deploy * 1000))

        k = bench_kills(mesh, args.kills, args.reset_after)
        det50, det95 = pct(k["detect"], 50) * 1000, pct(k["detect"], 95) * 1000
        res50, res95 = pct(k["respawn"], 50) * 1000, pct(k["respawn"], 95) * 1000
        print(f"exit detection (kill -9 → endpoint gone), {args.kills} kills: "
              f"p50 {det50:.1f} ms, p95 {det95:.1f} ms")
        print(f"respawn (kill -9 → replacement Ready): p50 {res50:.0f} ms, p95 {res95:.0f} ms; "
              f"minus the workload's own start: p50 {res50 - own_start * 1000:.0f} ms")
        rst50, lau50 = pct(k["restart"], 50) * 1000, pct(k["launch"], 50) * 1000
        print(f"  of which kill → replacement actor started p50 {rst50:.0f} ms (detection, "
              f"cleanup, backoff {args.backoff_base * 1000:.0f} ms), started → Ready p50 "
              f"{lau50:.0f} ms (verify, extract, spawn, the workload's start, 10 ms probe)")
        result.update(restart_p50_ms=round(rst50), launch_p50_ms=round(lau50))
        result.update(exit_detect_p50_ms=round(det50, 1), exit_detect_p95_ms=round(det95, 1),
                      respawn_p50_ms=round(res50), respawn_p95_ms=round(res95),
                      respawn_minus_start_p50_ms=round(res50 - own_start * 1000))
        mesh.client.request("stop", app="hello")
        wait(lambda: not mesh.app("hello")["instances"])

        # scale: N apps x 3 nodes
        digests = [publish(home, binary=HELLO, manifest={"name": f"app{n}", "version": "1"})
                   for n in range(args.apps)]
        proc = psutil.Process(mesh.proc.pid)
        cpu0 = proc.cpu_times()
        deploys, after_last = deploy_all(mesh, digests)
        want = args.apps * 3
        cpu1 = proc.cpu_times()
        mesh_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        rss = proc.memory_info().rss / 1048576
        threads = proc.num_threads()
        settle(proc)
        settled_rss = proc.memory_info().rss / 1048576
        settled_threads = proc.num_threads()
        # steady state: what 300 healthy instances cost (samples every 1 s, probes every 2 s)
        steady = steady_cpu(proc, 10.0)
        status_times = []
        for _ in range(10):
            t = time.perf_counter()
            mesh.client.request("status")
            status_times.append(time.perf_counter() - t)
        cli_times = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mycelium", "status", "--json", "--home",
                            str(home.root)], check=True, env=ENV, capture_output=True)
            cli_times.append(time.perf_counter() - t)
        print(f"scale {args.apps} apps x 3 nodes = {want} workloads: deploys took "
              f"{deploys:.2f} s; all Ready {after_last:.2f} s after the last deploy "
              f"({deploys + after_last:.2f} s after the first)")
        print(f"mesh CPU during the scale-up {mesh_cpu:.2f} s; mesh RSS {rss:.0f} MB with "
              f"{threads} threads when all Ready, settled {settled_rss:.0f} MB with "
              f"{settled_threads} threads; steady state {steady:.1f} % of a core")
        print(f"status over the socket p50 "
              f"{statistics.median(status_times) * 1000:.1f} ms; `mycelium status --json` "
              f"CLI wall p50 {statistics.median(cli_times) * 1000:.0f} ms")
        result.update(scale_workloads=want, scale_deploys_s=round(deploys, 2),
                      scale_ready_after_last_deploy_s=round(after_last, 2),
                      scale_ready_after_first_deploy_s=round(deploys + after_last, 2),
                      mesh_cpu_scale_s=round(mesh_cpu, 2),
                      mesh_rss_mb=round(rss), mesh_threads=threads,
                      mesh_rss_settled_mb=round(settled_rss), mesh_threads_settled=settled_threads,
                      mesh_cpu_steady_pct=round(steady, 1),
                      status_socket_ms=round(statistics.median(status_times) * 1000, 1),
                      status_cli_ms=round(statistics.median(cli_times) * 1000))
        t = time.perf_counter()
    finally:
        mesh.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the home, its spores and instances
    result["shutdown_s"] = round(time.perf_counter() - t, 2) if "t" in dir() else None
    result["load_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
