"""Benchmark the supervisors library: restart latency, and start/stop of 1,000 children.

Run from the repository root: ``python bench/supervisors.py [--crashes N] [--children N]``.
Prints the figures, then one final JSON line. Pykka's per-crash error log (a formatted
traceback) is silenced so that the supervision itself is measured.

Anchors, measured in the same run: a bare ``ThreadingActor.start()`` followed by one ``ask``,
the least any restart must do (a replacement is a new actor), and the same for N bare actors
started then stopped one by one; the ``*_over_anchor`` figures are the ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

# This script is itself named supervisors.py and Python puts its folder first on sys.path:
# put the repository root before it so that `import supervisors` finds the library.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import pykka

from supervisors import (
    ChildSpec,
    Report,
    SupervisedActor,
    Supervisor,
    SupFlags,
    which_children,
)


class Crash(Exception):
    """Told to the worker: raised in the handler."""


class Worker(SupervisedActor):
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise message
        return "pong"


class Bare(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return "pong"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_anchor(n: int) -> list[float]:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        ref = Bare.start()
        ref.ask("ping")
        times.append(time.perf_counter() - began)
        ref.stop()
    return times


def bench_restart(n: int) -> list[float]:
    restarted = threading.Event()

    def reporter(report: Report) -> None:
        if report.event == "child_restarted":
            restarted.set()

    flags = SupFlags(intensity=n + 1, period=3600.0)
    sup = Supervisor.start(flags, [ChildSpec("w", Worker.start)], path="bench", reporter=reporter)
    times = []
    try:
        ref = which_children(sup)[0].ref
        assert ref is not None
        for _ in range(n):
            restarted.clear()
            began = time.perf_counter()
            ref.tell(Crash())
            restarted.wait(5)
            ref = which_children(sup)[0].ref
            assert ref is not None and ref.ask("ping", timeout=5) == "pong"
            times.append(time.perf_counter() - began)
    finally:
        sup.stop(block=True)
    return times


def bench_bare_many(children: int) -> tuple[float, float]:
    began = time.perf_counter()
    refs = [Bare.start() for _ in range(children)]
    for ref in refs:
        ref.ask("ping")
    started = time.perf_counter() - began
    began = time.perf_counter()
    for ref in reversed(refs):
        ref.stop(block=True)
    return started, time.perf_counter() - began


def bench_many(children: int) -> tuple[float, float]:
    specs = [ChildSpec(f"w{i}", Worker.start) for i in range(children)]
    began = time.perf_counter()
    sup = Supervisor.start(SupFlags(), specs, path="bench")
    started = time.perf_counter() - began
    began = time.perf_counter()
    sup.stop(block=True)
    stopped = time.perf_counter() - began
    return started, stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crashes", type=int, default=2000)
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="start/stop rounds (best kept)")
    parser.add_argument("--pooled", action="store_true",
                        help="workers on the shared scheduler, not a thread each")
    args = parser.parse_args()
    Worker.pooled = args.pooled
    logging.getLogger("pykka").setLevel(logging.CRITICAL)

    bench_restart(100)  # warm-up
    anchor = bench_anchor(args.crashes)
    restart = bench_restart(args.crashes)
    rounds = [bench_many(args.children) for _ in range(args.rounds)]
    start_s = min(r[0] for r in rounds)
    stop_s = min(r[1] for r in rounds)
    bare = [bench_bare_many(args.children) for _ in range(args.rounds)]
    bare_start_s = min(r[0] for r in bare)
    bare_stop_s = min(r[1] for r in bare)
    assert not pykka.ActorRegistry.get_all()

    ms = 1000.0
    result = {
        "bench": "supervisors",
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
        "pooled_workers": args.pooled,
        "crashes": args.crashes,
        "restart_p50_ms": round(statistics.median(restart) * ms, 3),
        "restart_p99_ms": round(pct(restart, 0.99) * ms, 3),
        "restart_max_ms": round(max(restart) * ms, 3),
        "anchor_start_ask_p50_ms": round(statistics.median(anchor) * ms, 3),
        "restart_over_anchor_p50": round(statistics.median(restart) / statistics.median(anchor), 2),
        "children": args.children,
        "start_children_s": round(start_s, 3),
        "stop_children_s": round(stop_s, 3),
        "start_stop_rounds": args.rounds,
        "anchor_bare_start_s": round(bare_start_s, 3),
        "anchor_bare_stop_s": round(bare_stop_s, 3),
        "start_over_anchor": round(start_s / bare_start_s, 2),
        "stop_over_anchor": round(stop_s / bare_stop_s, 2),
    }
    print(f"restart latency over {args.crashes} crashes (crash by tell -> replacement answers):")
    print(f"  p50 {result['restart_p50_ms']} ms   p99 {result['restart_p99_ms']} ms   "
          f"max {result['restart_max_ms']} ms   (goal p50 <= 1 ms, p99 <= 5 ms)")
    print(f"  anchor: bare ThreadingActor start + ask p50 {result['anchor_start_ask_p50_ms']} ms; "
          f"restart/anchor {result['restart_over_anchor_p50']}x")
    print(f"supervisor with {args.children} children, best of {args.rounds}: "
          f"start {start_s:.3f} s, stop {stop_s:.3f} s   (goal <= 1 s each)")
    print(f"  anchor: {args.children} bare ThreadingActors started+asked {bare_start_s:.3f} s, "
          f"stopped {bare_stop_s:.3f} s; ratios {result['start_over_anchor']}x / "
          f"{result['stop_over_anchor']}x")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
