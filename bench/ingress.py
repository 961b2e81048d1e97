"""Benchmark: WebSockets through the edge against nginx's ``proxy_pass`` with ``Upgrade``.

Three figures:

- echo messages/s with 64 clients (each a ping-pong loop of small messages) through the
  edge and through nginx (1 worker), to the same aiohttp WebSocket echo backend;
- byte-exactness: ``--messages`` messages of random sizes (1 B to 1 MiB) echoed through the
  edge, each compared with what was sent (the count the tests scale down);
- the edge's RSS growth for ``--idle`` open, idle WebSockets.

Needs ``nginx`` (bench only). ``python3 bench/ingress.py [--seconds 5] [--clients 64]
[--messages 10000] [--idle 1000]``; prints one JSON object at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from edge import NGINX_PRELUDE, free_port, spawn, stop, wait_port  # noqa: E402  (bench/edge.py)

NGINX_CONF = NGINX_PRELUDE + """\
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{port};
    location /ws/ {{
      proxy_pass http://127.0.0.1:{backend}/;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 300s;
    }}
  }}
}}
"""


def run_backend(port: int) -> None:
    """An aiohttp WebSocket echo server on /echo."""
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/echo", echo)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def run_edge(port: int, backend: int) -> None:
    """The edge as the mesh runs it, routing /ws/ to the backend."""
    sys.path.insert(0, str(HERE.parent.parent))
    from mycelium.edge import EdgeConfig, EdgeServer, Endpoint, Route, RouteTable

    server = EdgeServer(EdgeConfig(port=port, edge_id="bench-edge"))
    server.start()
    server.set_routes(RouteTable({"ws": Route("ws", (
        Endpoint(f"http://127.0.0.1:{backend}", "ws#1"),))}))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop(1.0)


async def echo_rate(port: int, clients: int, seconds: float) -> float:
    """Messages/s: ``clients`` connections, each sending 64 B and awaiting its echo."""
    import aiohttp

    count = 0
    payload = b"x" * 64
    async with aiohttp.ClientSession() as session:
        conns = [await session.ws_connect(f"http://127.0.0.1:{port}/ws/echo")
                 for _ in range(clients)]
        deadline = time.monotonic() + seconds

        async def loop(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal count
            while time.monotonic() < deadline:
                await ws.send_bytes(payload)
                await ws.receive_bytes()
                count += 1

        started = time.monotonic()
        await asyncio.gather(*(loop(ws) for ws in conns))
        elapsed = time.monotonic() - started
        for ws in conns:
            await ws.close()
    return count / elapsed


async def exactness(port: int, messages: int) -> tuple[int, float]:
    """Echo ``messages`` random-size messages; return (mismatches, MiB sent)."""
    import aiohttp

    rng = random.Random(1)
    bad = 0
    sent = 0
    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"http://127.0.0.1:{port}/ws/echo", max_msg_size=0) as ws:
        for _ in range(messages):
            data = rng.randbytes(int(2 ** rng.uniform(0, 20)))
            sent += len(data)
            await ws.send_bytes(data)
            if await ws.receive_bytes() != data:
                bad += 1
    return bad, sent / 2**20


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def idle_growth(port: int, pid: int, n: int) -> float:
    """The edge's RSS growth (MiB) with ``n`` idle WebSockets open through it."""
    import aiohttp

    before = rss_kib(pid)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        conns = []
        for _ in range(n):
            conns.append(await session.ws_connect(f"http://127.0.0.1:{port}/ws/echo"))
        await asyncio.sleep(1.0)  # let the edge settle before measuring (a bench, not a test)
        after = rss_kib(pid)
        for ws in conns:
            await ws.close()
    return (after - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["backend", "edge"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--backend", type=int)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--idle", type=int, default=1000)
    args = parser.parse_args()
    if args.role == "backend":
        return run_backend(args.port)
    if args.role == "edge":
        return run_edge(args.port, args.backend)
    if shutil.which("nginx") is None:
        raise SystemExit("missing nginx: run `apt-get install -y nginx`")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    backend, edge_port, nginx_port = free_port(), free_port(), free_port()
    me = [sys.executable, str(HERE)]
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            procs.append(spawn([*me, "--role", "backend", "--port", str(backend)]))
            wait_port(backend, procs[-1])
            procs.append(spawn([*me, "--role", "edge", "--port", str(edge_port),
                                "--backend", str(backend)]))
            wait_port(edge_port, procs[-1])
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(NGINX_CONF.format(tmp=tmp, workers=1, connections=4096, backend=backend,
                                              port=nginx_port))
            procs.append(spawn(["nginx", "-c", str(conf), "-p", tmp]))
            wait_port(nginx_port, procs[-1])
            ratios, rates = [], {"edge": [], "nginx": []}
            for r in range(args.rounds):
                edge = asyncio.run(echo_rate(edge_port, args.clients, args.seconds))
                nginx = asyncio.run(echo_rate(nginx_port, args.clients, args.seconds))
                rates["edge"].append(edge)
                rates["nginx"].append(nginx)
                ratios.append(edge / nginx)
                print(f"round {r + 1}: edge {edge:,.0f} msg/s, nginx {nginx:,.0f} msg/s, "
                      f"ratio {edge / nginx:.2f}", flush=True)
            bad, mib = asyncio.run(exactness(edge_port, args.messages))
            print(f"exactness: {args.messages} messages, {mib:,.0f} MiB, {bad} mismatched",
                  flush=True)
            growth = asyncio.run(idle_growth(edge_port, procs[1].pid, args.idle))
            print(f"idle: {args.idle} open WebSockets, edge RSS +{growth:.1f} MiB", flush=True)
            print(json.dumps({
                "clients": args.clients, "edge_msgs_per_s": statistics.median(rates["edge"]),
                "nginx_msgs_per_s": statistics.median(rates["nginx"]),
                "edge_vs_nginx": statistics.median(ratios), "messages": args.messages,
                "mismatched": bad, "idle_websockets": args.idle, "idle_rss_mib": growth}))
        finally:
            for proc in reversed(procs):
                stop(proc)


if __name__ == "__main__":
    main()
