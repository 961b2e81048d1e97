"""Benchmark: blue/green rollout time for 3 nodes with warmup 1 s, under a steady load.

One command:

    python bench/rollout.py [--rounds 3] [--warmup 1] [--parallel 1]

A real ``mycelium up --nodes 3``; ``hello`` (examples/hello) with ``--max 3``; two keep-alive
clients GET ``/hello/`` through the edge throughout. Each round deploys the other version
(v1 ↔ v2) with ``deploy --wait --warmup W`` and times the CLI from start to exit (3 nodes
switched, no old instance left). Every non-2xx or failed request counts. Prints figures and a
final JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from reliability_common import Load, Mesh, cli, print_requests, publish_examples, timed_deploy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "home"
        digests = publish_examples(root)
        mesh = Mesh(root, f"[rollout]\nparallel = {args.parallel}\n")
        try:
            assert cli(root, "deploy", "hello", digests["v1"], "--max", "3").returncode == 0
            mesh.ready("hello", 3)
            times: list[float] = []
            with Load(mesh.port, "hello") as load:
                load.wait_requests(100)
                for k in range(args.rounds):
                    digest = digests["v2" if k % 2 == 0 else "v1"]
                    took = timed_deploy(root, "hello", digest, args.warmup)
                    times.append(took)
                    print(f"round {k + 1}: 3 nodes switched in {took:.2f} s "
                          f"(warmup {args.warmup:g} s, parallel {args.parallel})")
                load.wait_requests(100)
            stats = load.stats
        finally:
            mesh.stop()
    total = print_requests(load)
    print(f"rollout time: median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    print(json.dumps({"bench": "rollout", "nodes": 3, "warmup_s": args.warmup,
                      "parallel": args.parallel, "rounds": args.rounds,
                      "rollout_s": [round(t, 3) for t in times],
                      "rollout_median_s": round(statistics.median(times), 3),
                      "requests": total, "failed": stats.failed,
                      "versions": dict(stats.versions)}))


if __name__ == "__main__":
    main()
