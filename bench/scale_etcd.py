"""Benchmark: drain of a node with 20 instances under load, in etcd mode beside one machine.

What a drain promises: docs/reference.md#scale.

One command:

    python bench/scale_etcd.py [--instances 40] [--clients 8] [--rounds 1]

Each round runs the same drain twice, side by side:

- **local**: ``mycelium up --nodes 2``, ``hello`` deployed with ``--max N`` (N/2 on each
  node), then ``node drain node-1`` under load through the edge;
- **etcd**: a real etcd (tmp data dir, free loopback ports) and two members ``a`` and ``b``
  (one node each, own homes and edges), ``hello`` deployed through a with ``--max N`` (N/2 on
  a-1, N/2 on b-1), then ``node drain a-1`` asked through **b** under load through both
  edges: the placer (elected in etcd) puts the replacements on b-1, a-1's instances go once
  they are Ready.

Figures per mode: the drain's wall time (``node drain`` until it prints ``drained``), its exit
code, the requests answered during the measuring window (1 s before the drain to 1 s after)
and how many of them failed (goal: 0); the etcd/local ratio of the drain times. Prints a JSON
line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from bench._common import HELLO, Clients, Up, head_commit, wait  # noqa: E402
from bench.multihost import member_homes, start_etcd  # noqa: E402  (its etcd, its homes)
from mycelium.home import Home  # noqa: E402
from mycelium.spores import keygen, publish  # noqa: E402

CONFIG = "[instance]\nstop_grace = 1.0\n"


class Mesh(Up):
    """``mycelium up`` in the background (one machine, or an etcd member) with ``CONFIG``."""

    def __init__(self, home: Path, *args: str) -> None:
        (home / "mycelium.toml").write_text(CONFIG)
        super().__init__(home, *args)

    def by_node(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for app in self.client.request("status", app="hello")["apps"]:
            for i in app["instances"]:
                if i["state"] == "Ready":
                    out[i["node"]] = out.get(i["node"], 0) + 1
        return out

    def placeable(self, count: int) -> None:
        wait(lambda: sum("cpu" in n for n in self.client.request("status")["nodes"]) == count,
             30, "every node's capacity", interval=0.02)


def drain(asker: Mesh, node: str, urls: list[str]) -> dict[str, Any]:
    """Drain ``node`` through ``asker`` under load; the figures."""
    load = Clients(urls)
    time.sleep(1.0)  # a measuring window: load flowing before the drain
    t0 = time.perf_counter()
    result = asker.cli("node", "drain", node, "--timeout", "180")
    took = time.perf_counter() - t0
    time.sleep(1.0)  # and after it
    log = load.stop()
    failed = sum(1 for _, s in log if s != 200)
    return {"drain_s": round(took, 2), "exit": result.returncode, "requests": len(log),
            "failed": failed}


def local_round(root: Path, n: int, clients: int) -> dict[str, Any]:
    home = Home(root / "local").ensure()
    keygen(home)
    digest = publish(home, binary=HELLO, manifest={"name": "hello", "version": "1.0.0"})
    mesh = Mesh(home.root, "--nodes", "2")
    try:
        mesh.client.request("deploy", app="hello", digest=digest, min=n, max=n, cpu=0.01,
                            mem=16)
        wait(lambda: mesh.by_node() == {"node-1": n // 2, "node-2": n - n // 2}, 180,
             f"{n} Ready", interval=0.02)
        out = drain(mesh, "node-1", [f"{mesh.url}/hello/"] * clients)
        out["after"] = mesh.by_node()
        return out
    finally:
        mesh.stop()


def etcd_round(root: Path, n: int, clients: int) -> dict[str, Any]:
    etcd, url = start_etcd(root)
    a_home, b_home, digest = member_homes(root)
    members: list[Mesh] = []
    try:
        for home, prefix in ((a_home, "a"), (b_home, "b")):
            members.append(Mesh(home.root, "--fabric", url, "--node-prefix", prefix, "--nodes",
                              "1", "--lease-ttl", "2"))
        a, b = members
        a.placeable(2)
        a.client.request("deploy", app="hello", digest=digest, min=n, max=n, cpu=0.01,
                         mem=16)
        wait(lambda: b.by_node() == {"a-1": n // 2, "b-1": n - n // 2}, 180, f"{n} Ready",
             interval=0.02)
        urls = [f"{m.url}/hello/" for m in (a, b)] * (clients // 2)
        out = drain(b, "a-1", urls)  # asked through the member that does not own a-1
        out["after"] = b.by_node()
        return out
    finally:
        for m in members:
            m.stop()
        etcd.send_signal(signal.SIGKILL)
        etcd.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=40,
                        help="instances of hello over 2 nodes (the drained node has half)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("etcd") is None:
        raise SystemExit("etcd is not installed (apt-get install etcd-server)")
    commit = head_commit()
    rounds: dict[str, list[dict[str, Any]]] = {"local": [], "etcd": []}
    for r in range(args.rounds):
        for mode, run in (("local", local_round), ("etcd", etcd_round)):
            root = Path(tempfile.mkdtemp(prefix=f"bench-scale-etcd-{mode}-"))
            try:
                out = run(root, args.instances, args.clients)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            rounds[mode].append(out)
            print(f"round {r + 1} {mode}: drain of a node with {args.instances // 2} "
                  f"instances under load: {out['drain_s']:.2f} s, exit {out['exit']}; "
                  f"{out['requests']} requests, {out['failed']} failed; after {out['after']}")
    med = {m: statistics.median(x["drain_s"] for x in rs) for m, rs in rounds.items()}
    result = {"machine": f"{os.cpu_count()} cores", "commit": commit,
              "drained_node_instances": args.instances // 2, "clients": args.clients,
              "local_drain_s": med["local"], "etcd_drain_s": med["etcd"],
              "etcd_over_local": round(med["etcd"] / med["local"], 2) if med["local"] else None,
              "local_failed": sum(x["failed"] for x in rounds["local"]),
              "etcd_failed": sum(x["failed"] for x in rounds["etcd"]),
              "requests": {m: sum(x["requests"] for x in rs) for m, rs in rounds.items()}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
