"""Benchmark: what a cgroup per instance changes in starting and stopping a workload.

One command (as root, on a machine with a writable cgroup v2):

    python bench/cgroups.py [--spawns 200] [--rounds 3] [--gap 0]

Two ways to start the same trivial workload, in the same run, rounds alternating the order,
both as an isolated instance starts (a dynamic uid, its directories, the built env, ``setpriv``):
- ``uid``: containment by the instance's uid (a stop scans /proc for it);
- ``cgroup``: the workload also joins a cgroup of its own first (one ``sh`` exec that writes
  ``cgroup.procs``), and a stop reads ``cgroup.procs`` / writes ``cgroup.kill`` instead of
  scanning /proc, then removes the cgroup.

"Spawn cost" is from the start of the spawn (directories and cgroup included) until
``/bin/true`` has run (its exit ends the exec chain); "stop cost" is ``terminate()`` of a running
``sleep`` plus giving its directories, uid and cgroup back. Medians over rounds, then one JSON line.
``--gap S`` pauses S seconds between spawns. A move into a cgroup waits for an RCU grace period
unless another move came just before, so back to back (the default) hides what a launch
seconds after the last one pays; ``--gap 0.05`` shows it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT), *(p for p in sys.path
                             if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

from bench.isolation import OWN, scratch, summary  # noqa: E402 - after the sys.path fix above
from mycelium.node.cgroups import CgroupTree  # noqa: E402
from mycelium.node.isolation import Isolation  # noqa: E402
from mycelium.node.launch import spawn_retrying  # noqa: E402
from mycelium.node.sandboxed import confinement  # noqa: E402


def run(iso: Isolation, tree: CgroupTree | None, tag: str, n: int, argv: list[str],
        stop: bool, gap: float) -> list[float]:
    """``n`` spawns as an instance does (in a cgroup when ``tree``); seconds each."""
    times = []
    for i in range(n):
        time.sleep(gap)  # a pause between launches, not a synchronisation
        root = iso.instances_dir / f"{tag}{i}"
        (root / "app").mkdir(parents=True)
        t0 = time.perf_counter()
        box, env, confine = confinement(iso, root, f"bench#{i}", OWN, {})
        workload = spawn_retrying(argv, root, env, (root / "out.log", root / "err.log"),
                                  confine, tree, (256, 1.0))
        if stop:
            t0 = time.perf_counter()
            workload.terminate(grace=1.0)
            iso.release(box)
        else:
            workload.wait(10)
            iso.release(box)
            if workload.jail is not None:
                workload.jail.release()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.0,
                        help="seconds between spawns (0.05: as launches come)")
    args = parser.parse_args()
    tmp, iso = scratch("mycelium-bench-cg-")
    tree = CgroupTree.detect(tmp / "home")
    if tree is None:
        sys.exit("error: no writable cgroup v2 on this machine")
    rounds: list[dict[str, dict[str, dict[str, float]]]] = []
    try:
        for r in range(args.rounds):
            result: dict[str, dict[str, dict[str, float]]] = {}
            for mode in (["uid", "cgroup"] if r % 2 == 0 else ["cgroup", "uid"]):
                result[mode] = {}
                for what, argv, stop in (("spawn", ["/bin/true"], False),
                                         ("stop", ["/bin/sleep", "60"], True)):
                    times = run(iso, tree if mode == "cgroup" else None, f"r{r}{mode}{what}",
                                args.spawns, argv, stop, args.gap)
                    result[mode][what] = summary(times)
                    for leftover in iso.instances_dir.iterdir():
                        shutil.rmtree(leftover, ignore_errors=True)
            rounds.append(result)
            print(f"round {r + 1}: " + "  ".join(
                f"{m} {w} p50 {result[m][w]['p50_ms']:.2f} ms p95 {result[m][w]['p95_ms']:.2f} ms"
                for m in ("uid", "cgroup") for w in ("spawn", "stop")), flush=True)
    finally:
        tree.reap()
        tree.remove()
        shutil.rmtree(tmp, ignore_errors=True)
        iso.forget_dirs()

    def median(mode: str, what: str, key: str) -> float:
        return round(statistics.median(r[mode][what][key] for r in rounds), 3)

    med = {m: {w: {k: median(m, w, k) for k in ("p50_ms", "p95_ms", "max_ms")}
               for w in ("spawn", "stop")} for m in ("uid", "cgroup")}
    print("\n| containment | spawn p50 | spawn p95 | stop p50 | stop p95 |")
    print("| --- | --- | --- | --- | --- |")
    for mode in ("uid", "cgroup"):
        s, t = med[mode]["spawn"], med[mode]["stop"]
        print(f"| {mode} | {s['p50_ms']:.2f} ms | {s['p95_ms']:.2f} ms | "
              f"{t['p50_ms']:.2f} ms | {t['p95_ms']:.2f} ms |")
    uname = platform.uname()
    print(json.dumps({"bench": "cgroups", "machine": f"{uname.machine} {os.cpu_count()} cpu "
                      f"{uname.release}", "spawns": args.spawns, "rounds": args.rounds,
                      "gap_s": args.gap,
                      "median": med, "spawn_p50_ratio": round(
                          med["cgroup"]["spawn"]["p50_ms"] / med["uid"]["spawn"]["p50_ms"], 2),
                      "stop_p50_ratio": round(
                          med["cgroup"]["stop"]["p50_ms"] / med["uid"]["stop"]["p50_ms"], 2)}))


if __name__ == "__main__":
    main()
