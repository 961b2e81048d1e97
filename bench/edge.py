"""Benchmark: the edge against nginx (1 worker, keep-alive upstream) and a naive aiohttp proxy.

One command, alternating rounds, the same plain aiohttp backend behind all three:

    python bench/edge.py [--duration 8] [--rounds 3] [--connections 64] [--access-log]

Needs ``wrk`` and ``nginx`` (bench only): ``apt-get install -y wrk nginx``. Prints per-round
figures, the medians, the ratios measured in this run, and a final JSON line.
"""

from __future__ import annotations

import argparse
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
             access_home: str | None = None, workers: int = 0) -> None:
    """The edge, as the mesh runs it: an EdgeServer on its own loop thread.

    ``gil_noise`` busy Python threads stand in for actors of the mesh that compete for the GIL;
    with ``access_home`` the edge writes its access log to ``<access_home>/logs/``; with
    ``workers`` it runs as that many edge worker processes (``[edge] workers``).
    """
    sys.path.insert(0, str(HERE.parent.parent))
    import threading

    def busy() -> None:
        while True:
            sum(range(1000))

    for _ in range(gil_noise):
        threading.Thread(target=busy, daemon=True).start()
    from mycelium.edge import EdgeConfig, EdgeServer, Endpoint, Route, RouteTable

    config = EdgeConfig(port=port, edge_id="bench-edge", event_loop=loop, workers=workers,
                        access_log_home=Path(access_home) if access_home else None)
    from mycelium.edge.workers import EdgeWorkers

    server: EdgeServer | EdgeWorkers = EdgeWorkers(config) if workers else EdgeServer(config)
    server.start()
    server.set_routes(RouteTable({"hello": Route("hello", (
        Endpoint(f"http://127.0.0.1:{backend}", "hello#1"),))}))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop(1.0)


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/f; uwsgi_temp_path {tmp}/u; scgi_temp_path {tmp}/s;
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


def main() -> None:
    """Parse arguments, run the rounds, print the figures and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                        help="the edge's event loop (EdgeConfig.event_loop)")
    parser.add_argument("--gil-noise", type=int, default=0,
                        help="busy Python threads in the edge's process (actors competing "
                             "for the GIL)")
    parser.add_argument("--access-log", action="store_true",
                        help="the edge writes its access log (to a temporary home)")
    parser.add_argument("--access-home", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0,
                        help="run the edge as N worker processes ([edge] workers)")
    parser.add_argument("--role", choices=["backend", "naive", "edge"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--backend", type=int)
    args = parser.parse_args()
    if args.role == "backend":
        return run_backend(args.port)
    if args.role == "naive":
        return run_naive(args.port, args.backend)
    if args.role == "edge":
        return run_edge(args.port, args.backend, args.loop, args.gil_noise, args.access_home,
                        args.workers)
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {' '.join(missing)}: run `apt-get install -y wrk nginx`")

    me = [sys.executable, str(HERE)]
    backend_port, naive_port, edge_port, nginx_port = (free_port() for _ in range(4))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        try:
            procs.append(spawn([*me, "--role", "backend", "--port", str(backend_port)]))
            wait_port(backend_port, procs[-1])
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(NGINX_CONF.format(tmp=tmp, backend=backend_port, port=nginx_port))
            procs.append(spawn(["nginx", "-c", str(conf), "-p", tmp]))
            wait_port(nginx_port, procs[-1])
            procs.append(spawn([*me, "--role", "naive", "--port", str(naive_port),
                                "--backend", str(backend_port)]))
            wait_port(naive_port, procs[-1])
            procs.append(spawn([*me, "--role", "edge", "--port", str(edge_port),
                                "--backend", str(backend_port), "--loop", args.loop,
                                "--gil-noise", str(args.gil_noise),
                                *(["--access-home", tmp] if args.access_log else []),
                                "--workers", str(args.workers)]))
            wait_port(edge_port, procs[-1])
            targets = {"nginx": nginx_port, "naive": naive_port, "edge": edge_port}
            pids = {"nginx": procs[1].pid, "naive": procs[2].pid, "edge": procs[3].pid}
            backend_pid = procs[0].pid
            for port in targets.values():  # warm up every path once
                wrk(f"http://127.0.0.1:{port}/hello/", 1.0, args.connections)
            results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            names = list(targets)
            for r in range(args.rounds):
                for name in names[r % 3:] + names[:r % 3]:
                    cpu0, bcpu0 = cpu_seconds(pids[name]), cpu_seconds(backend_pid)
                    res = wrk(f"http://127.0.0.1:{targets[name]}/hello/", args.duration,
                              args.connections)
                    n = max(res["requests"], 1.0)
                    res["proxy_cpu_us"] = (cpu_seconds(pids[name]) - cpu0) / n * 1e6
                    res["backend_cpu_us"] = (cpu_seconds(backend_pid) - bcpu0) / n * 1e6
                    results[name].append(res)
                    print(f"round {r + 1} {name:6s} {res['rps']:9.0f} req/s  "
                          f"p50 {res['p50_ms']:7.2f} ms  p99 {res['p99_ms']:7.2f} ms  "
                          f"non-2xx {int(res['non2xx'])}  socket errors "
                          f"{int(res['socket_errors'])}  proxy CPU "
                          f"{res['proxy_cpu_us']:5.0f} us/req  backend CPU "
                          f"{res['backend_cpu_us']:5.0f} us/req", flush=True)
        finally:
            for proc in reversed(procs):
                stop(proc)
    summary: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        summary[name] = {
            "rps": statistics.median(x["rps"] for x in runs),
            "p99_ms": statistics.median(x["p99_ms"] for x in runs),
            "non2xx": sum(x["non2xx"] for x in runs),
            "socket_errors": sum(x["socket_errors"] for x in runs),
            "proxy_cpu_us_per_req": statistics.median(x["proxy_cpu_us"] for x in runs),
            "backend_cpu_us_per_req": statistics.median(x["backend_cpu_us"] for x in runs),
        }
    def per_round(metric: str, other: str) -> float:
        """Median over rounds of edge/other, each ratio taken within one round (less drift)."""
        return statistics.median(e[metric] / o[metric] for e, o in
                                 zip(results["edge"], results[other], strict=True))

    ratios = {
        "edge_vs_nginx_rps": per_round("rps", "nginx"),
        "edge_vs_naive_rps": per_round("rps", "naive"),
        "edge_vs_nginx_p99": per_round("p99_ms", "nginx"),
    }
    for name, s in summary.items():
        print(f"median {name:6s} {s['rps']:9.0f} req/s  p99 {s['p99_ms']:7.2f} ms  "
              f"non-2xx {int(s['non2xx'])}  socket errors {int(s['socket_errors'])}  "
              f"proxy CPU {s['proxy_cpu_us_per_req']:.0f} us/req")
    print("median of per-round ratios: edge/nginx req/s {edge_vs_nginx_rps:.2f}  "
          "edge/naive req/s {edge_vs_naive_rps:.2f}  "
          "edge/nginx p99 {edge_vs_nginx_p99:.2f}".format(**ratios))
    print(json.dumps({"bench": "edge", "cores": os.cpu_count(), "duration_s": args.duration,
                      "edge_loop": args.loop, "gil_noise": args.gil_noise,
                      "access_log": args.access_log, "workers": args.workers,
                      "rounds": args.rounds, "connections": args.connections,
                      "summary": summary, "ratios": ratios}))


if __name__ == "__main__":
    main()
