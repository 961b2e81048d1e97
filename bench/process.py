"""Benchmark: how fast a workload's death is noticed, and what watching 300 workloads costs.

One command:

    python bench/process.py [--kills 200] [--workloads 300] [--rounds 3]

Two watchers, measured in the same run on the same ``sleep`` workloads:
- ``pidfd``: mycelium.node.process (one shared reaper thread, epoll over pidfds);
- ``thread``: the anchor, one thread per workload blocked in ``Popen.wait()`` (what
  ``psutil.Process.wait`` in a watcher thread amounts to).

For each: exit-notice latency from ``kill -9`` to the callback over ``--kills`` kills, made one
at a time while all the others stay alive; and the thread count and RSS growth of this (the mesh)
process while ``--workloads`` workloads are watched. Rounds alternate the order; the medians
over rounds are printed, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

# bench/ is sys.path[0] when run as a script, and bench/supervisors.py would shadow the package:
# put the repository root there instead.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT), *(p for p in sys.path
                             if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

from mycelium.node.process import spawn  # noqa: E402 - after the sys.path fix above

Watcher = Callable[[int], tuple[int, Callable[[Callable[[int], None]], None]]]


def own_rss() -> int:
    """RSS of this process in bytes."""
    return int(psutil.Process().memory_info().rss)


class ThreadWatched:
    """The anchor: a Popen and a thread per workload that blocks in wait()."""

    def __init__(self, workdir: Path) -> None:
        self.popen = subprocess.Popen(["sleep", "3600"], cwd=workdir, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                      close_fds=True, start_new_session=True)
        self.pid = self.popen.pid
        self._callbacks: list[Callable[[int], None]] = []
        self._lock = threading.Lock()
        self._rc: int | None = None
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        rc = self.popen.wait()
        with self._lock:
            self._rc = rc
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(rc)

    def on_exit(self, callback: Callable[[int], None]) -> None:
        with self._lock:
            if self._rc is None:
                self._callbacks.append(callback)
                return
        callback(self._rc)


def run(kind: str, workloads: int, kills: int, workdir: Path) -> dict[str, float]:
    """Spawn ``workloads``, measure the watch cost, then kill ``kills`` of them one at a time."""
    rss0 = own_rss()
    started = time.perf_counter()
    if kind == "pidfd":
        procs: list[object] = [spawn(["sleep", "3600"], workdir, {}, workdir / "w.log")
                               for _ in range(workloads)]
    else:
        procs = [ThreadWatched(workdir) for _ in range(workloads)]
    spawn_s = time.perf_counter() - started
    threads, rss = threading.active_count() - 1, own_rss() - rss0  # threads besides main
    sample_us = 0.0
    if kind == "pidfd":  # what the memory budget's periodic sampling costs per workload
        for proc in procs:
            proc.cpu_percent()  # type: ignore[attr-defined]  # the cpu baseline
        time.sleep(0.2)  # past the 0.1 s reuse window of a walk: measure fresh walks
        t0 = time.perf_counter()
        for proc in procs:
            proc.rss_bytes()  # type: ignore[attr-defined]
            proc.cpu_percent()  # type: ignore[attr-defined]
        sample_us = (time.perf_counter() - t0) / len(procs) * 1e6
    latencies: list[float] = []
    try:
        for proc in procs[:kills]:
            noticed = threading.Event()
            stamp: list[float] = []

            def done(_rc: int, stamp: list[float] = stamp, noticed: threading.Event = noticed
                     ) -> None:
                stamp.append(time.perf_counter())
                noticed.set()

            proc.on_exit(done)  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
            if not noticed.wait(10):
                raise SystemExit(f"{kind}: exit of {proc.pid} not noticed")  # type: ignore[attr-defined]
            latencies.append(stamp[0] - t0)
    finally:
        for proc in procs:
            if kind == "pidfd":
                proc.terminate(grace=0.5)  # type: ignore[attr-defined]
            else:
                proc.popen.kill()  # type: ignore[attr-defined]
                proc.popen.wait()  # type: ignore[attr-defined]
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "max_ms": latencies[-1] * 1000,
        "threads": threads,
        "rss_added_mb": rss / 2**20,
        "spawn_per_s": workloads / spawn_s,
        "sample_us_per_workload": sample_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--workloads", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kills = min(args.kills, args.workloads)
    rounds: dict[str, list[dict[str, float]]] = {"pidfd": [], "thread": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            order = ("pidfd", "thread") if n % 2 == 0 else ("thread", "pidfd")
            for kind in order:
                r = run(kind, args.workloads, kills, Path(tmp))
                rounds[kind].append(r)
                print(f"round {n + 1} {kind:6}: exit notice p50 {r['p50_ms']:.2f} ms, "
                      f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms over {kills} kills; "
                      f"{args.workloads} watched with {r['threads']:.0f} threads besides main, "
                      f"+{r['rss_added_mb']:.1f} MB RSS; {r['spawn_per_s']:.0f} spawns/s")
    results = {kind: {m: statistics.median(r[m] for r in rs) for m in rs[0]}
               for kind, rs in rounds.items()}
    for kind, r in results.items():
        sample = (f", rss+cpu sample {r['sample_us_per_workload']:.0f} us/workload"
                  if kind == "pidfd" else "")
        print(f"median {kind:6}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
              f"max {r['max_ms']:.2f} ms, {r['threads']:.0f} threads, "
              f"+{r['rss_added_mb']:.1f} MB RSS, {r['spawn_per_s']:.0f} spawns/s{sample}")
    ratio = results["thread"]["p50_ms"] / results["pidfd"]["p50_ms"]
    print(f"p50 ratio thread/pidfd: {ratio:.2f}")
    print(json.dumps({"bench": "process", "machine": f"{platform.machine()} "
                      f"{os.cpu_count()} cpu {platform.release()}",
                      "kills": kills, "workloads": args.workloads, "rounds": args.rounds,
                      "median": {k: {m: round(v, 3) for m, v in r.items()}
                                 for k, r in results.items()},
                      "p50_ratio_thread_over_pidfd": round(ratio, 3)}))


if __name__ == "__main__":
    main()
