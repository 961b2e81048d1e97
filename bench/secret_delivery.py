"""Benchmark: ``secret set`` on a 3-instance app → all 3 replaced and serving the new value,
side by side with a plain ``deploy`` of a new version of the same app.

One command:

    python bench/secret_delivery.py [--rounds 5] [--warmup 0] [--parallel 1]

A real ``mycelium up --nodes 3``; the test workload ``tests/secrets/workloads/secretive`` as
app ``vault`` with ``--max 3`` and ``--warmup W``; two keep-alive clients GET ``/vault/``
through the edge throughout (the body names the value of secret DB_PASSWORD the instance read
from ``$CREDENTIALS_DIRECTORY``). Each round pipes a new value into ``mycelium secret set vault
DB_PASSWORD`` (``--wait``: it returns once every old instance is replaced) and records:

- *CLI*: from the command's start to its exit (3 new instances Ready, no old one left);
- *last old*: from the command's start to the last response that still carried an old value
  (after it, every request is served the new value);
- *deploy*: right after, ``mycelium deploy vault <digest of version 1.0.k> --max 3 --warmup W``
  (a blue/green update of the same app to a new spore, the anchor), timed the same way; the
  ratio is secret set over deploy (medians).

Every non-2xx or failed request counts. Prints figures and a final JSON line. The goal: ≤ 1 s
plus the app's warmup (``[rollout] parallel`` nodes switch at a time; with parallel 1 each of
the 3 nodes waits its own warmup).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reliability_common import ENV, REPO, Load, Mesh, print_requests, timed_deploy

from mycelium.home import Home
from mycelium.spores import keygen, publish

SECRETIVE = REPO / "tests" / "secrets" / "workloads" / "secretive"


def secret_set(root: Path, value: str) -> subprocess.CompletedProcess[bytes]:
    """``printf %s VALUE | mycelium secret set vault DB_PASSWORD --home root``."""
    return subprocess.run([sys.executable, "-m", "mycelium", "secret", "set", "vault",
                           "DB_PASSWORD", "--home", str(root)], input=value.encode(),
                          capture_output=True, env=ENV, check=False, timeout=300, cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    cli_s: list[float] = []
    last_old_s: list[float] = []
    deploy_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "home"
        home = Home(root).ensure()
        keygen(home)
        versions = [publish(home, binary=SECRETIVE, manifest={
            "name": "vault", "version": f"1.0.{k}", "env_secrets": ["DB_PASSWORD"]})
            for k in range(args.rounds + 1)]
        digest = versions[0]
        assert secret_set(root, "value-0").returncode == 0
        mesh = Mesh(root, f"[rollout]\nparallel = {args.parallel}\n")
        try:
            timed_deploy(root, "vault", digest, args.warmup)
            mesh.ready("vault", 3)
            with Load(mesh.port, "vault") as load:
                load.wait_requests(100)
                for k in range(1, args.rounds + 1):
                    old = f"value-{k - 1}"
                    started = time.monotonic()
                    result = secret_set(root, f"value-{k}")
                    took = time.monotonic() - started
                    if result.returncode != 0:
                        raise SystemExit(f"secret set failed: {result.stderr!r}")
                    load.wait_requests(50)
                    last_old = load.stats.last_seen.get(old, started) - started
                    cli_s.append(took)
                    last_old_s.append(max(last_old, 0.0))
                    deploy_s.append(timed_deploy(root, "vault", versions[k], args.warmup))
                    load.wait_requests(50)
                    print(f"round {k}: CLI {took:.2f} s, last old value served at "
                          f"{last_old:.2f} s; deploy {deploy_s[-1]:.2f} s (warmup "
                          f"{args.warmup:g} s, parallel {args.parallel})")
                load.wait_requests(100)
            stats = load.stats
        finally:
            mesh.stop()
    total = print_requests(load)
    ratio = statistics.median(cli_s) / statistics.median(deploy_s)
    print(f"secret set → 3 replaced: median {statistics.median(cli_s):.2f} s, "
          f"max {max(cli_s):.2f} s; last old value served: median "
          f"{statistics.median(last_old_s):.2f} s; deploy of a new version: median "
          f"{statistics.median(deploy_s):.2f} s; ratio {ratio:.2f}")
    print(json.dumps({"bench": "secrets", "instances": 3, "warmup_s": args.warmup,
                      "parallel": args.parallel, "rounds": args.rounds,
                      "cli_s": [round(t, 3) for t in cli_s],
                      "cli_median_s": round(statistics.median(cli_s), 3),
                      "last_old_s": [round(t, 3) for t in last_old_s],
                      "deploy_s": [round(t, 3) for t in deploy_s],
                      "deploy_median_s": round(statistics.median(deploy_s), 3),
                      "ratio": round(ratio, 3),
                      "requests": total, "failed": stats.failed}))


if __name__ == "__main__":
    main()
