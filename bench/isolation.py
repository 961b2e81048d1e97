"""Benchmark: what isolation adds to starting and stopping a workload.

One command (as root, so that the dynamic uid is what is measured):

    python bench/isolation.py [--spawns 200] [--rounds 3]

Two ways to start the same trivial workload (``/bin/true``), in the same run, rounds
alternating the order:
- ``off``: :func:`mycelium.node.process.spawn` as before isolation (inherited env, the mesh's
  uid, no wrapper);
- ``on``: what an instance does now: a uid from the pool, its private directories
  (:meth:`Isolation.prepare`), the built env, then the spawn through ``setpriv``/``prlimit``
  (uid/gid/groups, no_new_privs, RLIMIT_CORE, RLIMIT_NOFILE) with umask 077.

"Spawn cost" is from the start of the spawn (prepare included for ``on``) to the workload having
run: ``/bin/true`` exits right after its exec, so its exit (noticed by the reaper at once) marks
the end of the whole exec chain. "Stop cost" is ``terminate()`` of a running ``sleep`` (for
``on`` that includes the scan of /proc for the instance's uid, which is what makes containment
complete) plus, for ``on``, giving its directories and uid back. Medians over rounds are printed,
then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT), *(p for p in sys.path
                             if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

from bench._common import pct  # noqa: E402 - after the sys.path fix above
from mycelium.node.isolation import Isolation  # noqa: E402
from mycelium.node.process import spawn  # noqa: E402
from mycelium.node.sandboxed import confinement  # noqa: E402

OWN = {"PORT": "0", "MYCELIUM_APP": "bench", "MYCELIUM_NODE": "node-1",
       "MYCELIUM_DIGEST": "0" * 64, "MYCELIUM_INSTANCE": "bench@node-1#1"}


def run_off(base: Path, n: int, argv: list[str], stop: bool) -> list[float]:
    """``n`` spawns without isolation; seconds each (spawn to exit, or the stop)."""
    times = []
    for i in range(n):
        work = base / f"off{i}" / "app"
        work.mkdir(parents=True)
        t0 = time.perf_counter()
        workload = spawn(argv, work, dict(OWN), work.parent / "workload.log")
        if stop:
            t0 = time.perf_counter()
            workload.terminate(grace=1.0)
        else:
            workload.wait(10)
        times.append(time.perf_counter() - t0)
    return times


def run_on(iso: Isolation, n: int, argv: list[str], stop: bool) -> list[float]:
    """``n`` spawns as an instance does now; seconds each."""
    times = []
    for i in range(n):
        root = iso.instances_dir / f"on{i}"
        (root / "app").mkdir(parents=True)
        t0 = time.perf_counter()
        box, env, confine = confinement(iso, root, f"bench#{i}", OWN, {})
        workload = spawn(argv, root / "app", env, root / "workload.log", confine=confine)
        if stop:
            t0 = time.perf_counter()
            workload.terminate(grace=1.0)
            iso.release(box)
            times.append(time.perf_counter() - t0)
        else:
            workload.wait(10)
            times.append(time.perf_counter() - t0)
            iso.release(box)
    return times


def summary(times: list[float]) -> dict[str, float]:
    """p50, p95 and max of ``times`` (seconds) in milliseconds."""
    return {"p50_ms": round(pct(times, 50) * 1000, 3), "p95_ms": round(pct(times, 95) * 1000, 3),
            "max_ms": round(max(times) * 1000, 3)}


def scratch(prefix: str, arm: bool = True) -> tuple[Path, Isolation]:
    """A temporary directory with an isolated home and instances directory in it; the process
    armed as ``up`` arms the mesh (workloads inherit no_new_privs and the limits) if ``arm``."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(tmp, 0o711)
    iso = Isolation.resolve(tmp / "home", instances_dir=str(tmp / "instances"))
    iso.ensure_dirs(tmp / "home")
    if arm:
        iso.arm_mesh()
    return tmp, iso


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wrapper", action="store_true",
                        help="measure the setpriv/prlimit path (a mesh whose limits differ)")
    parser.add_argument("--ballast-mb", type=int, default=0,
                        help="touch this much memory first (fork costs grow with the parent)")
    args = parser.parse_args()
    ballast = bytearray(args.ballast_mb * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    tmp, iso = scratch("mycelium-bench-iso-", arm=not args.wrapper)
    rounds: list[dict[str, dict[str, dict[str, float]]]] = []
    try:
        for r in range(args.rounds):
            result: dict[str, dict[str, dict[str, float]]] = {}
            order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
            for mode in order:
                base = tmp / f"r{r}{mode}"
                result[mode] = {}
                for what, argv, stop in (("spawn", ["/bin/true"], False),
                                         ("stop", ["sleep", "60"], True)):
                    if mode == "off":
                        times = run_off(base / what, args.spawns, argv, stop)
                    else:
                        times = run_on(iso, args.spawns, argv, stop)
                        for leftover in iso.instances_dir.iterdir():
                            shutil.rmtree(leftover, ignore_errors=True)
                    result[mode][what] = summary(times)
            rounds.append(result)
            print(f"round {r + 1}: " + "  ".join(
                f"{m} {w} p50 {result[m][w]['p50_ms']:.2f} ms p95 {result[m][w]['p95_ms']:.2f} ms"
                for m in ("off", "on") for w in ("spawn", "stop")), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        iso.forget_dirs()

    def median(mode: str, what: str, key: str) -> float:
        return round(statistics.median(r[mode][what][key] for r in rounds), 3)

    med = {m: {w: {k: median(m, w, k) for k in ("p50_ms", "p95_ms", "max_ms")}
               for w in ("spawn", "stop")} for m in ("off", "on")}
    added = round(med["on"]["spawn"]["p50_ms"] - med["off"]["spawn"]["p50_ms"], 3)
    print("\n| workload start | p50 | p95 | stop p50 | stop p95 |")
    print("| --- | --- | --- | --- | --- |")
    for mode in ("off", "on"):
        s, t = med[mode]["spawn"], med[mode]["stop"]
        print(f"| isolation {mode} | {s['p50_ms']:.2f} ms | {s['p95_ms']:.2f} ms | "
              f"{t['p50_ms']:.2f} ms | {t['p95_ms']:.2f} ms |")
    print(f"\nisolation adds {added:.2f} ms to a spawn at p50 (goal: <= 5 ms)")
    uname = platform.uname()
    print(json.dumps({"bench": "isolation", "machine": f"{uname.machine} {os.cpu_count()} cpu "
                      f"{uname.release}", "uid": os.geteuid(), "spawns": args.spawns,
                      "rounds": args.rounds, "path": "wrapper" if args.wrapper else "inherited",
                      "ballast_mb": args.ballast_mb, "median": med, "spawn_p50_added_ms": added,
                      "goal_ms": 5.0, "ok": added <= 5.0}))


if __name__ == "__main__":
    main()
