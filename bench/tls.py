"""Benchmark: the edge's TLS termination against nginx with the same certificate.

One command, alternating rounds, the same plain aiohttp backend behind both (one nginx worker,
one edge process), a P-256 certificate made by ``mycelium cert dev``'s code:

    python bench/tls.py [--duration 6] [--rounds 3] [--connections 64]

Two figures per proxy: HTTPS keep-alive req/s (wrk over established TLS connections), and
handshakes/s (wrk with ``Connection: close``: every request is a new connection and a full
handshake). Needs ``wrk`` and ``nginx`` (``apt-get install -y wrk nginx``). Prints per-round
figures, the medians, the ratios, and a final JSON line.
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
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

from edge import NGINX_PRELUDE, free_port, run_backend, spawn, stop, wait_port, wrk  # noqa: E402

NGINX_CONF = NGINX_PRELUDE + """\
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
    ssl_session_cache shared:SSL:10m;
    location /hello/ {{
      proxy_pass http://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def run_edge(port: int, tls_port: int, backend: int, cert: str, key: str) -> None:
    """The edge as the mesh runs it, with a TLS listener."""
    from mycelium.edge import EdgeConfig, EdgeServer, Endpoint, Route, RouteTable
    from mycelium.edge.tls import CertPair, TLSSettings

    server = EdgeServer(EdgeConfig(port=port, edge_id="bench-edge", tls=TLSSettings(
        port=tls_port, pairs=(CertPair(Path(cert), Path(key)),))))
    server.start()
    server.set_routes(RouteTable({"hello": Route("hello", (
        Endpoint(f"http://127.0.0.1:{backend}", "hello#1"),))}))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop(1.0)


def wrk_close(url: str, duration: float, connections: int) -> dict[str, float]:
    """wrk with ``Connection: close``: one full TLS handshake per request."""
    seconds = max(1, round(duration))
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s",
                          "-H", "Connection: close", url],
                         capture_output=True, text=True, check=True).stdout
    import re

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(rps.group(1)) if rps else 0.0,
            "socket_errors": float(sum(int(x) for x in errors.groups())) if errors else 0.0}


def main() -> None:
    """Parse arguments, run the rounds, print the figures and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--handshake-connections", type=int, default=16)
    parser.add_argument("--role", choices=["backend", "edge"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--backend", type=int)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    if args.role == "backend":
        return run_backend(args.port)
    if args.role == "edge":
        return run_edge(args.port, args.tls_port, args.backend, args.cert, args.key)
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {' '.join(missing)}: run `apt-get install -y wrk nginx`")
    from mycelium.edge.certgen import write_dev_certs

    me = [sys.executable, str(HERE)]
    backend_port, edge_port, edge_tls, nginx_port = (free_port() for _ in range(4))
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        "nginx": {"keepalive": [], "handshakes": []}, "edge": {"keepalive": [], "handshakes": []}}
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        certs = write_dev_certs(Path(tmp) / "tls")
        try:
            procs.append(spawn([*me, "--role", "backend", "--port", str(backend_port)]))
            wait_port(backend_port, procs[-1])
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(NGINX_CONF.format(tmp=tmp, workers=1, connections=4096,
                                              backend=backend_port, port=nginx_port,
                                              cert=certs.cert, key=certs.key))
            procs.append(spawn(["nginx", "-c", str(conf), "-p", tmp]))
            wait_port(nginx_port, procs[-1])
            procs.append(spawn([*me, "--role", "edge", "--port", str(edge_port), "--tls-port",
                                str(edge_tls), "--backend", str(backend_port), "--cert",
                                str(certs.cert), "--key", str(certs.key)]))
            wait_port(edge_tls, procs[-1])
            targets = {"nginx": nginx_port, "edge": edge_tls}
            for port in targets.values():  # warm up
                wrk(f"https://127.0.0.1:{port}/hello/", 1.0, args.connections)
            names = list(targets)
            for r in range(args.rounds):
                for name in names[r % 2:] + names[:r % 2]:
                    url = f"https://127.0.0.1:{targets[name]}/hello/"
                    keep = wrk(url, args.duration, args.connections)
                    hand = wrk_close(url, args.duration, args.handshake_connections)
                    results[name]["keepalive"].append(keep)
                    results[name]["handshakes"].append(hand)
                    print(f"round {r + 1} {name:5s} keep-alive {keep['rps']:8.0f} req/s "
                          f"(p99 {keep['p99_ms']:6.2f} ms, errors {int(keep['socket_errors'])})"
                          f"  handshakes {hand['rps']:7.0f}/s (errors "
                          f"{int(hand['socket_errors'])})", flush=True)
        finally:
            for proc in reversed(procs):
                stop(proc)

    def ratio(kind: str) -> float:
        return statistics.median(e["rps"] / n["rps"] for e, n in zip(
            results["edge"][kind], results["nginx"][kind], strict=True) if n["rps"])

    summary = {name: {kind: statistics.median(x["rps"] for x in runs)
                      for kind, runs in kinds.items()} for name, kinds in results.items()}
    ratios = {"edge_vs_nginx_keepalive_rps": ratio("keepalive"),
              "edge_vs_nginx_handshakes": ratio("handshakes")}
    for name, s in summary.items():
        print(f"median {name:5s} keep-alive {s['keepalive']:8.0f} req/s  handshakes "
              f"{s['handshakes']:7.0f}/s")
    print("median of per-round ratios: edge/nginx keep-alive {edge_vs_nginx_keepalive_rps:.2f}"
          "  edge/nginx handshakes {edge_vs_nginx_handshakes:.2f}".format(**ratios))
    print(json.dumps({"bench": "tls", "cores": os.cpu_count(), "duration_s": args.duration,
                      "rounds": args.rounds, "connections": args.connections,
                      "handshake_connections": args.handshake_connections,
                      "summary": summary, "ratios": ratios}))


if __name__ == "__main__":
    main()
