"""Crash tests and consoles for a running mesh: ``chaos``, ``repl`` and ``up --repl``.

Both consoles offer the same names: ``fabric``, ``edge``, ``nodes`` (name → handle), ``msg``
(:mod:`mycelium.messages`), ``tree()`` and ``status()``; a handle has ``.tell(message)`` and
``.ask(message, timeout=...)``.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from typing import Annotated, Any

import orjson
import typer

from mycelium.errors import OperationFailed
from mycelium.operator.client import ControlClient
from mycelium.states import InstanceState

from .app import HomeOption, app, err, home_of, out

__all__ = ["chaos_cmd", "chaos_summary", "console", "repl_cmd"]


def console(mesh: Any) -> None:
    """``up --repl``: the console in the mesh's process (``operator.repl.run_in_process``).

    Leaving it never stops the mesh: ``up`` stays in the foreground until Ctrl-C, SIGTERM or
    ``mycelium down``.
    """
    from mycelium.operator.repl import run_in_process

    run_in_process(mesh, out)


@app.command("chaos")
def chaos_cmd(home: HomeOption = None,
              app_name: Annotated[str | None, typer.Option(
                  "--app", help="Kill only this app's workloads (default: any app)")] = None,
              interval: Annotated[float, typer.Option(
                  "--interval", min=0.01, help="Seconds between kills")] = 1.0,
              duration: Annotated[float, typer.Option(
                  "--duration", min=0.0, help="Seconds to go on killing")] = 10.0,
              seed: Annotated[int | None, typer.Option(
                  "--seed", help="Random seed: the same seed replays the same victims")] = None,
              as_json: Annotated[bool, typer.Option(
                  "--json", help="Print the summary as one JSON object")] = False) -> None:
    """Kill random workload processes at that rate; report kills, recoveries, slowest.

    A recovery is a new Ready instance on the victim's node.

    Exit 1 if a kill did not recover within 30 s after the run.
    \f
    Victims are chosen among the Ready instances sorted by (app, node), so ``--seed`` replays
    the same choices on the same layout.

    Raises:
        OperationFailed: a kill did not recover within 30 s after the run.
    """
    client = ControlClient(home_of(home))
    rng = random.Random(seed)
    end = time.monotonic() + duration
    kills, times = 0, []
    while time.monotonic() < end:
        tick = time.monotonic()
        status = client.request("status", app=app_name)
        ready = sorted(((a["app"], i) for a in status["apps"] for i in a["instances"]
                        if i["state"] == InstanceState.READY and i["pid"]),
                       key=lambda v: (v[0], v[1]["node"]))
        if ready:
            app_of, victim = rng.choice(ready)
            with contextlib.suppress(OperationFailed):
                client.request("kill", app=app_of, node=victim["node"], signal=9)
                kills += 1
                err(f"killed {victim['id']} pid {victim['pid']}")
                took = _await_recovery(client, app_of, victim, end + 30)
                if took is not None:
                    times.append(took)
                    err(f"recovered {app_of} on {victim['node']} in {took * 1000:.0f} ms")
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    summary = chaos_summary(kills, times)
    if as_json:
        out(orjson.dumps(summary).decode())
    else:
        out(f"chaos: {kills} kills, {len(times)} recoveries, slowest recovery "
             f"{summary['slowest_ms']:.0f} ms (p50 {summary['p50_ms']:.0f} ms, "
             f"p99 {summary['p99_ms']:.0f} ms)")
    if len(times) < kills:
        raise OperationFailed(f"{kills - len(times)} kill(s) did not recover")


def chaos_summary(kills: int, times: list[float]) -> dict[str, Any]:
    """Kills, recoveries and recovery times in ms (slowest, p50, p99 by nearest rank)."""
    ordered = sorted(times)

    def rank(q: float) -> float:
        if not ordered:
            return 0.0
        return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))] * 1000

    return {"kills": kills, "recoveries": len(ordered),
            "slowest_ms": ordered[-1] * 1000 if ordered else 0.0,
            "p50_ms": rank(0.5), "p99_ms": rank(0.99)}


def _await_recovery(client: ControlClient, app_name: str, victim: dict[str, Any],
                    deadline: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() < deadline:
        for doc in client.request("status", app=app_name)["apps"]:
            for i in doc["instances"]:
                if (i["node"] == victim["node"] and i["state"] == InstanceState.READY
                        and i["pid"] != victim["pid"]):
                    return time.monotonic() - start
        time.sleep(0.005)
    return None


@app.command("repl")
def repl_cmd(home: HomeOption = None) -> None:
    """Attach a Python console to the running mesh (leaving it never stops the mesh)."""
    from mycelium.operator.repl import run_attached

    run_attached(home_of(home))
