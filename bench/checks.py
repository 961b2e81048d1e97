"""Benchmark: how fast health checks act on a real mesh.

One command:

    python bench/checks.py [--rounds 20] [--interval 0.5]
    python bench/checks.py --cpu [--apps 100] [--window 30]

Against a ``mycelium up --nodes 1`` on a temporary home and free port, with the test workload
``tests/checks/workloads/checker``:

- **readiness → out of the routes**: an app with one instance and an http readiness check
  (``--interval``, ``failures`` 1). Each round creates the file that makes ``/ready`` answer 503
  and times until the edge answers 503 for the app (a request every millisecond or so on one
  kept-alive connection), then removes it and waits until the edge routes to it again. The
  file is created at a random phase of the check's period, so the times spread over
  ``[0, interval]`` plus the mesh's own latency; the goal is a maximum ≤ interval + 50 ms.
- **notify READY=1 → Ready**: an app with a ``notify`` check. Each round SIGKILLs the
  workload; its replacement prints when it sent ``READY=1`` (wall clock) and ``status``
  gives the instance's ``ready_at``; the difference is the latency (goal ≤ 20 ms).

With ``--cpu``, instead: what checks cost a mesh of many instances. One ``mycelium up --nodes
3`` (bench/mesh.py's) runs ``--apps`` apps x 3 nodes of examples/hello twice, one after the
other: first with the default check (no ``checks``: the mesh's own ``GET /health`` probe),
then with every manifest carrying an http readiness and a tcp liveness check at 2 s. Once all
are Ready and the start burst's threads are gone, the mesh process's CPU (user + system) is
taken over ``--window`` seconds; the goal is checks ≤ 1.2 x default.

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT), *(p for p in sys.path
                             if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

from bench._common import free_port, pct  # noqa: E402 - after the sys.path fix above
from bench.mesh import HELLO, Mesh, deploy_all, settle, steady_cpu  # noqa: E402
from bench.mesh import wait as wait_long  # noqa: E402
from mycelium.home import Home  # noqa: E402
from mycelium.operator.control import ControlClient  # noqa: E402
from mycelium.spores import keygen, publish  # noqa: E402

CHECKER = _ROOT / "tests" / "checks" / "workloads" / "checker"
CHECKS_2S = [{"type": "http", "role": "readiness", "interval": 2},
             {"type": "tcp", "role": "liveness", "interval": 2}]
CPU_GOAL = 1.2
CONFIG = "[restart]\nbackoff_base = 0.01\nbackoff_cap = 0.05\nintensity = 1000\nperiod = 1.0\n"


def wait(predicate: Any, timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # the mesh may be busy restarting
            value = None
        if value:
            return value
        time.sleep(0.005)
    raise SystemExit(f"timed out waiting for {what}")


def instances(client: ControlClient, app: str) -> list[dict[str, Any]]:
    status = client.request("status", app=app)
    return [i for a in status["apps"] if a["app"] == app for i in a["instances"]]


def workdir(home: Path, inst: dict[str, Any]) -> Path:
    return home / "instances" / str(inst["id"]).replace("/", "_")


def edge_status(conn: http.client.HTTPConnection, app: str) -> int:
    conn.request("GET", f"/{app}/")
    resp = conn.getresponse()
    resp.read()
    return resp.status


def readiness(home: Path, client: ControlClient, port: int, digest: str, rounds: int,
              interval: float) -> list[float]:
    client.request("deploy", app="ready", digest=digest, min=1, max=1, max_instances=1,
                   cpu=0.1, mem=256, warmup=0.0, rollout_timeout=30.0)
    inst = wait(lambda: next((i for i in instances(client, "ready")
                              if i["state"] == "Ready"), None), what="ready Ready")
    app_dir = Path(inst["dir"]) if inst.get("dir") else workdir(home, inst) / "app"  # isolated
    flag = app_dir / "unready"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for _ in range(rounds):
        wait(lambda: edge_status(conn, "ready") == 200, what="ready routed")
        time.sleep(random.uniform(0, interval))  # a random phase of the check's period
        start = time.monotonic()
        flag.touch()
        while edge_status(conn, "ready") != 503:
            pass
        times.append(time.monotonic() - start)
        flag.unlink()
    conn.close()
    return times


def notify_ready(home: Path, client: ControlClient, digest: str, rounds: int) -> list[float]:
    client.request("deploy", app="notify", digest=digest, min=1, max=1, max_instances=1,
                   cpu=0.1, mem=256, warmup=0.0, rollout_timeout=30.0)
    seen: set[str] = set()
    times = []
    for _ in range(rounds + 1):
        inst = wait(lambda: next((i for i in instances(client, "notify")
                                  if i["state"] == "Ready" and i["id"] not in seen), None),
                    what="notify Ready")
        seen.add(inst["id"])
        log = workdir(home, inst) / "output" / "stdout"  # the live stdout file
        sent = wait(lambda log=log: re.search(r"READY=1 sent at ([\d.]+)", log.read_text()),
                    what="READY=1 in the workload's log")
        if len(seen) > 1:  # the first one started with the deploy: not a restart
            times.append(inst["ready_at"] - float(sent[1]))
        os.kill(inst["pid"], signal.SIGKILL)
    return times


def cpu(apps: int, window: float) -> dict[str, Any]:
    """The mesh's steady-state CPU with ``apps`` x 3 instances, default check then checks."""
    result: dict[str, Any] = {"workloads": apps * 3, "window_s": window,
                              "manifest_checks": CHECKS_2S}
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home").ensure()
        keygen(home)
        config = home.root / "mycelium.toml"
        config.write_text(CONFIG)
        mesh = Mesh(home.root, config)
        proc = psutil.Process(mesh.proc.pid)
        try:
            for label, extra in (("default", {}), ("checks", {"checks": CHECKS_2S})):
                digests = [publish(home, binary=HELLO,
                                   manifest={"name": f"{label}{n}", "version": "1", **extra})
                           for n in range(apps)]
                deploys, after_last = deploy_all(mesh, digests, prefix=label)
                settle(proc)
                load = os.getloadavg()[0]
                pct_core = steady_cpu(proc, window)
                print(f"{label:8} {apps * 3} instances: all Ready {deploys + after_last:.1f} s "
                      f"after the first deploy; mesh CPU over {window:g} s {pct_core:.2f} % of "
                      f"a core (load {load:.1f})")
                result[label] = {"cpu_pct": round(pct_core, 2), "load": round(load, 2),
                                 "ready_s": round(deploys + after_last, 1)}
                for n in range(apps):
                    mesh.client.request("stop", app=f"{label}{n}")
                wait_long(lambda: not any(i["state"] != "Stopped" for a in
                                          mesh.client.request("status")["apps"]
                                          for i in a["instances"]),
                          300, interval=0.5)  # a loaded machine stops 300 slowly
        finally:
            mesh.stop()
    ratio = result["checks"]["cpu_pct"] / max(result["default"]["cpu_pct"], 1e-9)
    result.update(ratio=round(ratio, 3), goal=CPU_GOAL)
    print(f"checks / default: {ratio:.2f} (goal <= {CPU_GOAL})")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--cpu", action="store_true",
                        help="measure the mesh's CPU with many instances instead")
    parser.add_argument("--apps", type=int, default=100, help="with --cpu: apps x 3 nodes")
    parser.add_argument("--window", type=float, default=30.0,
                        help="with --cpu: seconds of steady state measured")
    args = parser.parse_args()
    if args.cpu:
        result = cpu(args.apps, args.window)
        commit = subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=False).stdout.strip()
        result.update(machine=platform.node(), cpus=os.cpu_count(), load=os.getloadavg()[0],
                      commit=commit)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home").ensure()
        keygen(home)
        (home.root / "mycelium.toml").write_text(CONFIG)
        ready = publish(home, binary=CHECKER, manifest={
            "name": "ready", "version": "1", "checks": [
                {"type": "http", "role": "readiness", "path": "/ready",
                 "interval": args.interval, "timeout": 0.5, "failures": 1}]})
        notify = publish(home, binary=CHECKER, manifest={
            "name": "notify", "version": "1", "checks": [{"type": "notify"}]})
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(_ROOT)}
        env.pop("MYCELIUM_HOME", None)
        log = (home.root / "up.log").open("w")
        up = subprocess.Popen([sys.executable, "-m", "mycelium", "up", "--home", str(home.root),
                               "--edge-port", str(port), "--nodes", "1"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
        try:
            client = ControlClient(home)
            wait(lambda: client.request("status"), what="the mesh")
            out = readiness(home.root, client, port, ready, args.rounds, args.interval)
            ready_times = notify_ready(home.root, client, notify, args.rounds)
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(60)
            log.close()
            if up.returncode:
                print((home.root / "up.log").read_text()[-3000:], file=sys.stderr)
    result = {
        "readiness_out_of_routes_ms": {"p50": pct(out, 50) * 1e3, "max": max(out) * 1e3,
                                       "goal_max": (args.interval + 0.05) * 1e3},
        "notify_ready_ms": {"p50": pct(ready_times, 50) * 1e3, "p99": pct(ready_times, 99) * 1e3,
                            "max": max(ready_times) * 1e3, "goal": 20.0},
        "rounds": args.rounds, "interval": args.interval, "machine": platform.node(),
        "cpus": os.cpu_count(), "load": os.getloadavg()[0],
    }
    r, n = result["readiness_out_of_routes_ms"], result["notify_ready_ms"]
    print(f"readiness failure -> out of the routes: p50 {r['p50']:.1f} ms, max {r['max']:.1f} ms"
          f" (goal <= {r['goal_max']:.0f} ms)")
    print(f"notify READY=1 -> Ready: p50 {n['p50']:.2f} ms, p99 {n['p99']:.2f} ms, "
          f"max {n['max']:.2f} ms (goal <= 20 ms)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
