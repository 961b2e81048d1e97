"""Benchmark: the edge's worker processes against nginx with as many worker processes.

One command, alternating rounds, the same plain aiohttp backend behind every target: nginx
(``worker_processes`` = the edge's workers, keep-alive upstream), the quiet edge, the edge with
a CPU-bound thread in the mesh's process (``--gil-noise``), the edge writing its access log,
and optionally a naive aiohttp proxy. Each edge also times its route pushes (a new snapshot
every 0.1 s, until every worker applied it):

    python bench/edge.py [--duration 8] [--rounds 3] [--connections 64] [--workers N]

Needs ``wrk`` and ``nginx`` (bench only): ``apt-get install -y wrk nginx``. Prints per-round
figures, the medians, the ratios measured in this run, and a final JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def free_port() -> int:
    """Return a port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Poll until ``port`` accepts connections or ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


# -- the three servers, each run as `python bench/edge.py --role ROLE ...` ----------------------
def run_backend(port: int) -> None:
    """A plain aiohttp backend: 13-byte body, keep-alive."""
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello, world!")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def run_busy() -> None:
    """A CPU-bound process: the same noise next to nginx, to tell a CPU share from the GIL."""
    while True:
        sum(range(1000))


def run_naive(port: int, backend: int) -> None:
    """The naive proxy: one shared ClientSession, copy status and body."""
    import aiohttp
    from aiohttp import web

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession()

    async def proxy(request: web.Request) -> web.Response:
        rest = request.match_info["tail"]
        url = f"http://127.0.0.1:{backend}/{rest}"
        async with request.app["session"].request(request.method, url,
                                                  data=await request.read()) as resp:
            return web.Response(status=resp.status, body=await resp.read())

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/hello/{tail:.*}", proxy)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def run_edge(port: int, backend: int, loop: str, gil_noise: int,
             access_home: str | None, workers: int, push_file: str | None,
             control_nice: int) -> None:
    """The edge, as the mesh runs it: ``workers`` edge worker processes fed by this process
    (the mesh's stand-in), or with ``workers = 0`` an EdgeServer on a thread of this process.

    ``gil_noise`` busy Python threads in THIS process stand in for mesh actors that never
    sleep (with worker processes they cannot slow the proxy); they run only between SIGUSR1
    and SIGUSR2, while this variant is measured. Then this process lowers its CPU priority as
    ``mycelium up`` does (``[mesh] control_nice``: :mod:`mycelium.priority`; the busy threads
    included), while the workers it starts keep the original one. With ``access_home`` the edge
    writes its access log to ``<access_home>/logs/``. A thread pushes a new routing snapshot
    every 0.1 s, as deploys and kills elsewhere in the mesh would, and at exit the seconds each
    push took to reach every worker are written to ``push_file``.
    """
    sys.path.insert(0, str(HERE.parent.parent))
    import threading

    noisy = threading.Event()  # SIGUSR1: the busy threads run; SIGUSR2: they pause

    def busy() -> None:
        while noisy.wait():
            while noisy.is_set():
                sum(range(1000))

    for _ in range(gil_noise):
        threading.Thread(target=busy, daemon=True).start()
    signal.signal(signal.SIGUSR1, lambda *_: noisy.set())
    signal.signal(signal.SIGUSR2, lambda *_: noisy.clear())
    from mycelium.edge import EdgeConfig, EdgeServer, Endpoint, Route, RouteTable
    from mycelium.edge.workers import EdgeWorkers
    from mycelium.priority import lower_control_plane

    lower_control_plane(control_nice, in_process_edge=workers == 0)

    config = EdgeConfig(port=port, edge_id="bench-edge", event_loop=loop, workers=workers,
                        access_log_home=Path(access_home) if access_home else None)
    server: EdgeServer | EdgeWorkers = EdgeWorkers(config) if workers else EdgeServer(config)
    server.start()
    hello = Route("hello", (Endpoint(f"http://127.0.0.1:{backend}", "hello#1"),))
    server.set_routes(RouteTable({"hello": hello}))
    done = threading.Event()

    def push() -> None:  # one more app comes and goes: a new snapshot every 0.1 s
        n = 0
        while not done.wait(0.1):
            n += 1
            other = Route("other", (Endpoint(f"http://127.0.0.1:{n % 1000 + 1}", "o#1"),))
            server.set_routes(RouteTable({"hello": hello, **({"other": other} if n % 2 else {})}))

    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    threading.Thread(target=push, daemon=True).start()
    while not stopped.wait(0.2):
        pass
    done.set()
    if push_file and isinstance(server, EdgeWorkers):
        Path(push_file).write_text(json.dumps(server.push_seconds()))
    server.stop(1.0)


# What every nginx of the benches shares; each adds its own upstream and server, then "}".
NGINX_PRELUDE = """
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/f; uwsgi_temp_path {tmp}/u; scgi_temp_path {tmp}/s;
"""

NGINX_CONF = NGINX_PRELUDE + """\
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location /hello/ {{
      proxy_pass http://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    """Start one helper process in its own session (so it can be signalled as a group)."""
    return subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a helper and wait for it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wrk(url: str, duration: float, connections: int) -> dict[str, float]:
    """Run wrk once; return req/s, p50/p99 latency (ms) and error counts."""
    seconds = max(1, round(duration))
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50_ms": latency("50"),
            "requests": float(total.group(1)) if total else 0.0,
            "p99_ms": latency("99"), "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
            "socket_errors": float(sum(int(x) for x in errors.groups())) if errors else 0.0}


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process and its children (nginx's worker)."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def _noise_on(name: str, pids: dict[str, int], me: list[str],
              threads: int) -> list[subprocess.Popen[bytes]]:
    """Start the noise of a ``*-noise`` variant: the mesh process's busy threads, or for
    nginx as many busy processes beside it."""
    if name == "edge-noise":
        os.kill(pids[name], signal.SIGUSR1)
    if name == "nginx-noise":
        return [spawn([*me, "--role", "busy"]) for _ in range(threads)]
    return []


def _noise_off(name: str, pids: dict[str, int], procs: list[subprocess.Popen[bytes]]) -> None:
    if name == "edge-noise":
        os.kill(pids[name], signal.SIGUSR2)
    for proc in procs:
        stop(proc)


GOALS = {  # name: (limit, "min" or "max")
    "edge_vs_nginx_rps": (0.9, "min"),
    "edge_vs_nginx_p99": (1.2, "max"),
    "noise_vs_quiet_rps": (0.9, "min"),
    "noise_vs_quiet_p99": (1.5, "max"),
    "edge_vs_nginx_cpu_per_req": (1.5, "max"),
    "log_vs_quiet_rps": (0.85, "min"),
    "push_p99_ms": (50.0, "max"),
}
"""The figures this bench is judged by (docs/benchmarks.md, section edge)."""


def main() -> None:
    """Parse arguments, run the rounds, print the figures and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                        help="the edge's event loop (EdgeConfig.event_loop)")
    parser.add_argument("--gil-noise", type=int, default=1,
                        help="busy Python threads in the mesh's process for the edge-noise "
                             "variant (default 1; 0 leaves that variant out)")
    parser.add_argument("--no-access-log", action="store_true",
                        help="leave out the edge-log variant (the edge writing its access log)")
    parser.add_argument("--naive", action="store_true",
                        help="also measure a naive aiohttp proxy")
    parser.add_argument("--workers", type=int, default=None,
                        help="edge worker processes, and nginx worker_processes (default: the "
                             "usable CPUs, as [edge] workers); 0 runs the edge in-process "
                             "against a 1-worker nginx")
    parser.add_argument("--control-nice", type=int, default=None,
                        help="[mesh] control_nice of the mesh's stand-in (default: the "
                             "shipped default; 0 leaves its priority alone)")
    parser.add_argument("--role", choices=["backend", "naive", "edge", "busy"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--backend", type=int)
    parser.add_argument("--access-home", help=argparse.SUPPRESS)
    parser.add_argument("--push-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "backend":
        return run_backend(args.port)
    if args.role == "naive":
        return run_naive(args.port, args.backend)
    if args.role == "busy":
        return run_busy()
    if args.role == "edge":
        return run_edge(args.port, args.backend, args.loop, args.gil_noise, args.access_home,
                        args.workers or 0, args.push_file, args.control_nice)
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {' '.join(missing)}: run `apt-get install -y wrk nginx`")
    sys.path.insert(0, str(HERE.parent.parent))
    from mycelium.defaults import usable_cpus
    from mycelium.priority import DEFAULT_CONTROL_NICE

    workers = usable_cpus() if args.workers is None else args.workers
    control_nice = DEFAULT_CONTROL_NICE if args.control_nice is None else args.control_nice
    me = [sys.executable, str(HERE)]
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        variants: dict[str, tuple[int, str | None]] = {"edge": (0, None)}  # (noise, log home)
        if args.gil_noise:
            variants["edge-noise"] = (args.gil_noise, None)
        if not args.no_access_log:
            variants["edge-log"] = (0, f"{tmp}/log-home")
            Path(f"{tmp}/log-home").mkdir()
        targets: dict[str, int] = {}
        pids: dict[str, int] = {}
        try:
            backend_port = free_port()
            procs.append(spawn([*me, "--role", "backend", "--port", str(backend_port)]))
            wait_port(backend_port, procs[-1])
            backend_pid = procs[-1].pid
            conf = Path(tmp) / "nginx.conf"
            targets["nginx"] = free_port()
            conf.write_text(NGINX_CONF.format(tmp=tmp, backend=backend_port,
                                              port=targets["nginx"], workers=max(1, workers),
                                              connections=1024))
            procs.append(spawn(["nginx", "-c", str(conf), "-p", tmp]))
            wait_port(targets["nginx"], procs[-1])
            pids["nginx"] = procs[-1].pid
            if args.naive:
                targets["naive"] = free_port()
                procs.append(spawn([*me, "--role", "naive", "--port", str(targets["naive"]),
                                    "--backend", str(backend_port)]))
                wait_port(targets["naive"], procs[-1])
                pids["naive"] = procs[-1].pid
            for name, (noise, home) in variants.items():
                targets[name] = free_port()
                procs.append(spawn([*me, "--role", "edge", "--port", str(targets[name]),
                                    "--backend", str(backend_port), "--loop", args.loop,
                                    "--gil-noise", str(noise), "--workers", str(workers),
                                    "--control-nice", str(control_nice),
                                    "--push-file", f"{tmp}/{name}.push",
                                    *(["--access-home", home] if home else [])]))
                wait_port(targets[name], procs[-1])
                pids[name] = procs[-1].pid
            for port in targets.values():  # warm up every path once
                wrk(f"http://127.0.0.1:{port}/hello/", 1.0, args.connections)
            if args.gil_noise:  # the control: nginx with the same noise in a process beside it
                targets["nginx-noise"], pids["nginx-noise"] = targets["nginx"], pids["nginx"]
            results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            names = list(targets)
            for r in range(args.rounds):
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    beside = _noise_on(name, pids, me, args.gil_noise)
                    cpu0, bcpu0 = cpu_seconds(pids[name]), cpu_seconds(backend_pid)
                    try:
                        res = wrk(f"http://127.0.0.1:{targets[name]}/hello/", args.duration,
                                  args.connections)
                    finally:
                        _noise_off(name, pids, beside)
                    n = max(res["requests"], 1.0)
                    res["proxy_cpu_us"] = (cpu_seconds(pids[name]) - cpu0) / n * 1e6
                    res["backend_cpu_us"] = (cpu_seconds(backend_pid) - bcpu0) / n * 1e6
                    results[name].append(res)
                    print(f"round {r + 1} {name:10s} {res['rps']:9.0f} req/s  "
                          f"p50 {res['p50_ms']:7.2f} ms  p99 {res['p99_ms']:7.2f} ms  "
                          f"non-2xx {int(res['non2xx'])}  socket errors "
                          f"{int(res['socket_errors'])}  proxy CPU "
                          f"{res['proxy_cpu_us']:5.0f} us/req  backend CPU "
                          f"{res['backend_cpu_us']:5.0f} us/req", flush=True)
        finally:
            for proc in reversed(procs):
                stop(proc)
        pushes: list[float] = []
        for name in variants:
            with contextlib.suppress(OSError, ValueError):
                pushes += json.loads(Path(f"{tmp}/{name}.push").read_text())
    summary: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        summary[name] = {
            "rps": statistics.median(x["rps"] for x in runs),
            "p50_ms": statistics.median(x["p50_ms"] for x in runs),
            "p99_ms": statistics.median(x["p99_ms"] for x in runs),
            "non2xx": sum(x["non2xx"] for x in runs),
            "socket_errors": sum(x["socket_errors"] for x in runs),
            "proxy_cpu_us_per_req": statistics.median(x["proxy_cpu_us"] for x in runs),
            "backend_cpu_us_per_req": statistics.median(x["backend_cpu_us"] for x in runs),
        }

    def per_round(metric: str, a: str, b: str) -> float:
        """Median over rounds of a/b, each ratio taken within one round (less drift)."""
        return statistics.median(x[metric] / max(y[metric], 1e-9) for x, y in
                                 zip(results[a], results[b], strict=True))

    ratios = {"edge_vs_nginx_rps": per_round("rps", "edge", "nginx"),
              "edge_vs_nginx_p99": per_round("p99_ms", "edge", "nginx"),
              "edge_vs_nginx_cpu_per_req": per_round("proxy_cpu_us", "edge", "nginx")}
    if "naive" in results:
        ratios["edge_vs_naive_rps"] = per_round("rps", "edge", "naive")
    if "edge-noise" in results:
        ratios["noise_vs_quiet_rps"] = per_round("rps", "edge-noise", "edge")
        ratios["noise_vs_quiet_p99"] = per_round("p99_ms", "edge-noise", "edge")
        ratios["nginx_noise_vs_quiet_rps"] = per_round("rps", "nginx-noise", "nginx")
        ratios["nginx_noise_vs_quiet_p99"] = per_round("p99_ms", "nginx-noise", "nginx")
    if "edge-log" in results:
        ratios["log_vs_quiet_rps"] = per_round("rps", "edge-log", "edge")
    if pushes:
        ordered = sorted(pushes)
        ratios["push_p50_ms"] = ordered[len(ordered) // 2] * 1000
        ratios["push_p99_ms"] = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        ratios["push_max_ms"] = ordered[-1] * 1000
    goals = {name: {"value": round(ratios[name], 3), "limit": limit,
                    "met": ratios[name] >= limit if kind == "min" else ratios[name] <= limit}
             for name, (limit, kind) in GOALS.items() if name in ratios}
    for name, s in summary.items():
        print(f"median {name:10s} {s['rps']:9.0f} req/s  p99 {s['p99_ms']:7.2f} ms  "
              f"non-2xx {int(s['non2xx'])}  socket errors {int(s['socket_errors'])}  "
              f"proxy CPU {s['proxy_cpu_us_per_req']:.0f} us/req")
    print(f"route pushes timed: {len(pushes)}")
    for name, goal in goals.items():
        print(f"{name:28s} {goal['value']:8.3f}  goal {'>=' if GOALS[name][1] == 'min' else '<='}"
              f" {goal['limit']:g}  {'met' if goal['met'] else 'MISSED'}")
    print(json.dumps({"bench": "edge", "cores": os.cpu_count(), "workers": workers,
                      "duration_s": args.duration, "edge_loop": args.loop,
                      "gil_noise": args.gil_noise, "control_nice": control_nice,
                      "rounds": args.rounds,
                      "connections": args.connections, "pushes": len(pushes),
                      "summary": summary, "ratios": ratios, "goals": goals}))


if __name__ == "__main__":
    main()
