"""Benchmark: a member dies: how fast the mesh notices, re-places, keeps serving.

What a member death should do: docs/reference.md#multi-machine.

One command:

    python bench/multihost.py [--ttl 2] [--rounds 3] [--clients 4]

Each round starts a real etcd (tmp data dir, free loopback ports) and two members (``a`` and
``b``, 2 nodes each, each with its own home and edge), deploys the example ``hello`` app with
``--max 3`` (so each member runs at least one instance and one runs two), and runs
``--clients`` keep-alive clients against the surviving member's edge. Then it kills the member
holding two instances with SIGKILL *and* its workloads (a machine that dies takes its
processes with it) and measures:

- ``gone``: death → its endpoints have left the survivor's view (the routes pushed to the
  survivor's edge are computed from that same view, in the same actor step); goal ≤ TTL + 1 s;
- ``replaced``: death → 3 Ready instances again (``--max 3``, many per node on the survivor's
  2 nodes), all on the survivor;
- the success rate of the requests through the surviving edge across the failure (death →
  re-placed) and after ``gone``.

Prints per-round figures, the medians and a final JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from bench._common import HELLO, Up, free_port, wait  # noqa: E402
from mycelium.home import Home  # noqa: E402
from mycelium.spores import keygen, publish, trust  # noqa: E402


def start_etcd(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A one-member etcd on free loopback ports; returns (process, etcd://…)."""
    cport, pport = free_port(), free_port()
    c, p = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
    proc = subprocess.Popen(
        ["etcd", "--name", "b", "--data-dir", str(root / "etcd"), "--listen-client-urls", c,
         "--advertise-client-urls", c, "--listen-peer-urls", p,
         "--initial-advertise-peer-urls", p, "--initial-cluster", f"b={p}",
         "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", cport, timeout=1)
            conn.request("POST", "/v3/maintenance/status", b"{}")
            return conn.getresponse().status == 200
        except OSError:
            return False

    wait(up, 20, "etcd", interval=0.02)
    return proc, f"etcd://127.0.0.1:{cport}"


def member_homes(root: Path) -> tuple[Home, Home, str]:
    """Home ``root/a`` (a signing key, hello published) and home ``root/b`` (trusting a's
    key); returns them and hello's digest."""
    a_home, b_home = Home(root / "a").ensure(), Home(root / "b").ensure()
    trust(b_home, keygen(a_home))
    return a_home, b_home, publish(a_home, binary=HELLO, manifest={"name": "hello",
                                                                   "version": "1.0.0"})


class Member(Up):
    """``mycelium up --fabric`` in the background: 2 nodes named ``PREFIX-n``."""

    def __init__(self, home: Path, etcd: str, prefix: str, ttl: float) -> None:
        super().__init__(home, "--fabric", etcd, "--node-prefix", prefix, "--nodes", "2",
                         "--lease-ttl", str(ttl))
        self.prefix = prefix

    def hello_ready(self) -> list[dict[str, Any]]:
        """Ready hello instances as this member sees the mesh."""
        doc = self.client.request("status")
        return [i for a in doc["apps"] if a["app"] == "hello" for i in a["instances"]
                if i["state"] == "Ready"]

    def kill_machine(self) -> None:
        """SIGKILL the member and every process of its home (its workloads)."""
        self.proc.send_signal(signal.SIGKILL)
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(str(self.home) in part for part in p.info["cmdline"] or ()):
                    p.kill()
            except (psutil.Error, TypeError):
                continue
        self.proc.wait(10)


def client_loop(port: int, stop: threading.Event, log: list[tuple[float, int]]) -> None:
    """GET /hello/ on keep-alive connections until ``stop``; log (time, status)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not stop.is_set():
        try:
            conn.request("GET", "/hello/")
            resp = conn.getresponse()
            resp.read()
            log.append((time.monotonic(), resp.status))
        except (OSError, http.client.HTTPException):
            log.append((time.monotonic(), 0))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        time.sleep(0.002)
    conn.close()


def rate(log: list[tuple[float, int]], start: float, end: float) -> tuple[float, int]:
    """Share of 200s among the requests answered in [start, end)."""
    got = [s for t, s in log if start <= t < end]
    return (sum(1 for s in got if s == 200) / len(got) if got else 1.0), len(got)


def one_round(root: Path, ttl: float, clients: int) -> dict[str, float]:
    """One failure; returns the round's figures."""
    etcd, url = start_etcd(root)
    a_home, b_home, digest = member_homes(root)
    members: list[Member] = []
    try:
        members = [Member(a_home.root, url, "a", ttl), Member(b_home.root, url, "b", ttl)]
        a, b = members
        # the placer places only over the nodes it knows
        wait(lambda: sum("cpu" in n for n in a.client.request("status")["nodes"]) == 4, 20,
             "every node's capacity at the placer", interval=0.02)
        a.client.request("deploy", app="hello", digest=digest, min=1, max=3)
        placed = wait(lambda: len(r := b.hello_ready()) == 3 and r, 30, "3 Ready", interval=0.02)
        held = {m.prefix: sum(i["node"].startswith(m.prefix) for i in placed) for m in members}
        victim = a if held["a"] >= held["b"] else b
        survivor = b if victim is a else a
        stop, log = threading.Event(), []  # type: ignore[var-annotated]
        threads = [threading.Thread(target=client_loop, args=(survivor.port, stop, log))
                   for _ in range(clients)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        victim.kill_machine()

        def gone() -> bool:
            return not any(i["node"].startswith(victim.prefix) for i in survivor.hello_ready())

        wait(gone, ttl + 10, "endpoints to leave", interval=0.02)
        t_gone = time.monotonic()
        try:
            wait(lambda: len(r := survivor.hello_ready()) == 3
                 and all(i["node"].startswith(survivor.prefix) for i in r), 30, "re-placement",
                 interval=0.02)
        except SystemExit:
            print(json.dumps(survivor.client.request("status"), indent=1)[:3000])
            raise
        t_placed = time.monotonic()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(15)
        across, n_across = rate(log, t0, t_placed)
        after, n_after = rate(log, t_gone, t_placed + 1.0)
        return {"victim_instances": held[victim.prefix], "gone_s": t_gone - t0,
                "replaced_s": t_placed - t0, "success_across": across,
                "requests_across": n_across, "success_after_gone": after,
                "requests_after_gone": n_after, "before_rate": rate(log, 0, t0)[0]}
    finally:
        for m in members:
            m.stop()
        etcd.kill()
        etcd.wait(10)


def main() -> None:
    """Run the rounds; print figures and a final JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ttl", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    if shutil.which("etcd") is None:
        raise SystemExit("etcd is not installed (apt-get install etcd-server)")
    rounds = []
    for n in range(args.rounds):
        root = Path(tempfile.mkdtemp(prefix="mycelium-multihost-"))
        try:
            r = one_round(root, args.ttl, args.clients)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rounds.append(r)
        print(f"round {n + 1}: victim held {r['victim_instances']}, endpoints gone after "
              f"{r['gone_s']:.2f}s (TTL {args.ttl:g}s), re-placed after {r['replaced_s']:.2f}s, "
              f"success {100 * r['success_across']:.2f}% across ({r['requests_across']} req), "
              f"{100 * r['success_after_gone']:.2f}% after gone ({r['requests_after_gone']})",
              flush=True)
    med = {k: statistics.median(r[k] for r in rounds)
           for k in ("gone_s", "replaced_s", "success_across", "success_after_gone")}
    print(f"median: gone {med['gone_s']:.2f}s, re-placed {med['replaced_s']:.2f}s, success "
          f"{100 * med['success_across']:.2f}% across, {100 * med['success_after_gone']:.2f}% "
          "after gone")
    print(json.dumps({"bench": "multihost", "ttl": args.ttl, "clients": args.clients,
                      "cpus": os.cpu_count(), "median": med, "rounds": rounds}))


if __name__ == "__main__":
    main()
