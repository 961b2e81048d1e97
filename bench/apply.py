"""Benchmark: desired state in a file against a real 3-node mesh (``mycelium up`` subprocess).

One command:

    python bench/apply.py [--apps 100] [--plans 7]

Every figure is the wall time of a real CLI process (``python -m mycelium …``, start-up
included), as an operator would see it:
- ``apply`` of a file of ``--apps`` new apps (examples/hello, one instance each, cpu 0.01, mem
  64): from the command's start to its exit, which is when every app is Ready (checked again
  through ``status`` right after); it includes packing and publishing every spore;
- ``plan`` of that file against the mesh running it (all ``= unchanged``), ``--plans`` runs,
  beside ``mycelium status`` and ``python -c pass`` as anchors (the machine's own floor);
- ``export``, then ``plan`` of the exported file (``digest = …`` tables);
- ``apply`` of the same file again (nothing to do, no pid changes);
- ``apply --prune`` of an empty file (every app destroyed);
- beside it, in the same run and on the same mesh: ``--apps`` sequential ``mycelium deploy``
  commands (spores published beforehand, not timed), each waiting for its app's Ready.
Prints figures and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import free_port  # noqa: E402
from mycelium.home import Home  # noqa: E402
from mycelium.operator.control import ControlClient  # noqa: E402
from mycelium.spores import keygen, publish  # noqa: E402

HELLO = REPO / "examples" / "hello" / "hello"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def cli(home: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run one CLI command; its wall time and result (exit non-zero: the benchmark stops)."""
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "mycelium", *args, "--home", str(home)],
                         capture_output=True, text=True, env=ENV, check=False)
    took = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"mycelium {' '.join(args)} exited {run.returncode}: {run.stderr}")
    return took, run


def ready_pids(client: ControlClient) -> dict[str, list[int]]:
    return {d["app"]: sorted(i["pid"] for i in d["instances"] if i["state"] == "Ready")
            for d in client.request("status")["apps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--plans", type=int, default=7)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True, check=False).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp_name:
        tmp = Path(tmp_name)
        home = Home(tmp / "home").ensure()
        keygen(home)
        names = [f"app-{n:03d}" for n in range(args.apps)]
        tables = []
        for name in names:
            manifest = tmp / f"{name}.json"
            manifest.write_text(json.dumps({"name": name, "version": "1.0.0"}))
            tables.append(f'[apps.{name}]\nbinary = "{HELLO}"\nmanifest = "{manifest}"\n'
                          "cpu = 0.01\nmem = 64\n")
        file = tmp / "mesh.toml"
        file.write_text("\n".join(tables))
        empty = tmp / "empty.toml"
        empty.write_text("")
        port = free_port()
        up = subprocess.Popen([sys.executable, "-m", "mycelium", "up", "--home", str(home.root),
                               "--edge-port", str(port), "--nodes", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=ENV)
        assert up.stdout is not None
        for line in up.stdout:
            if "mesh up" in line:
                break
        else:
            raise SystemExit("the mesh did not come up")
        threading.Thread(target=up.stdout.read, daemon=True).start()
        client = ControlClient(home)
        result: dict[str, Any] = {"bench": "apply", "machine": f"{os.cpu_count()} cores",
                                  "commit": commit, "apps": args.apps,
                                  "load": round(os.getloadavg()[0], 2)}
        try:
            apply_s, _ = cli(home.root, "apply", str(file))
            pids = ready_pids(client)
            assert all(len(pids.get(n, [])) == 1 for n in names), "not all Ready after apply"
            plans = [cli(home.root, "plan", str(file))[0] for _ in range(args.plans)]
            statuses = [cli(home.root, "status")[0] for _ in range(args.plans)]
            bare = []
            for _ in range(args.plans):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                bare.append(time.perf_counter() - t0)
            _, last = cli(home.root, "plan", str(file))
            assert last.stdout.count("= unchanged") == args.apps, last.stdout[-300:]
            export_s, exported = cli(home.root, "export")
            (tmp / "exported.toml").write_text(exported.stdout)
            replans = [cli(home.root, "plan", str(tmp / "exported.toml"))[0]
                       for _ in range(3)]
            again_s, again = cli(home.root, "apply", str(file))
            assert again.stdout.startswith("nothing to do"), again.stdout
            assert ready_pids(client) == pids, "the second apply restarted something"
            prune_s, _ = cli(home.root, "apply", str(empty), "--prune")
            digests = [publish(home, binary=HELLO, manifest={"name": f"seq-{n:03d}",
                                                             "version": "1.0.0"})
                       for n in range(args.apps)]
            t0 = time.perf_counter()
            for n, digest in enumerate(digests):
                cli(home.root, "deploy", f"seq-{n:03d}", digest, "--cpu", "0.01", "--mem", "64")
            deploys_s = time.perf_counter() - t0
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(120)
    result.update(apply_all_ready_s=round(apply_s, 2), plan_median_s=round(
        statistics.median(plans), 3), plan_max_s=round(max(plans), 3),
        status_median_s=round(statistics.median(statuses), 3),
        python_pass_median_s=round(statistics.median(bare), 3),
        export_s=round(export_s, 3), plan_exported_median_s=round(statistics.median(replans), 3),
        apply_again_s=round(again_s, 3), apply_prune_all_s=round(prune_s, 2),
        sequential_deploys_s=round(deploys_s, 2))
    print(f"apply of {args.apps} new apps, all Ready: {apply_s:.2f} s after the command "
          f"started (goal ≤ 10 s; packing included)")
    print(f"{args.apps} sequential `mycelium deploy`s (each waits for Ready): {deploys_s:.2f} s")
    print(f"plan of {args.apps} unchanged apps: median {statistics.median(plans):.3f} s, "
          f"max {max(plans):.3f} s over {len(plans)} runs (goal ≤ 0.5 s); in the same run "
          f"`mycelium status` {statistics.median(statuses):.3f} s, `python -c pass` "
          f"{statistics.median(bare):.3f} s (medians)")
    print(f"export {export_s:.3f} s; plan of the exported file (digest tables): median "
          f"{statistics.median(replans):.3f} s")
    print(f"apply again (nothing to do, pids unchanged) {again_s:.3f} s; apply --prune of an "
          f"empty file (destroy {args.apps}) {prune_s:.2f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
