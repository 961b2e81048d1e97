"""Crash tests and consoles for a running mesh: ``chaos``, ``repl`` and ``up --repl`` (SPEC §3, §8).

Both consoles offer the same names: ``fabric``, ``edge``, ``nodes`` (name → handle), ``msg``
(:mod:`mycelium.messages`), ``tree()`` and ``status()``; a handle has ``.tell(message)`` and
``.ask(message, timeout=...)``.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from typing import Annotated, Any

import typer

from mycelium.errors import OperationFailed
from mycelium.operator.client import ControlClient

from .app import HomeOption, app, home_of

__all__ = ["chaos_cmd", "console", "repl_cmd"]


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def console(mesh: Any) -> None:
    """``up --repl``: the console in the mesh's process (``operator.repl.run_in_process``).

    Leaving it never stops the mesh: ``up`` stays in the foreground until Ctrl-C, SIGTERM or
    ``mycelium down``.
    """
    from mycelium.operator.repl import run_in_process

    run_in_process(mesh, _out)


@app.command("chaos")
def chaos_cmd(home: HomeOption = None,
              app_name: Annotated[str | None, typer.Option("--app")] = None,
              interval: Annotated[float, typer.Option("--interval", min=0.01)] = 1.0,
              duration: Annotated[float, typer.Option("--duration", min=0.0)] = 10.0,
              seed: Annotated[int | None, typer.Option("--seed")] = None) -> None:
    """Kill random workload processes at that rate; report kills, recoveries, slowest."""
    client = ControlClient(home_of(home))
    rng = random.Random(seed)
    end = time.monotonic() + duration
    kills, recoveries, slowest = 0, 0, 0.0
    while time.monotonic() < end:
        tick = time.monotonic()
        status = client.request("status", app=app_name)
        ready = [(a["app"], i) for a in status["apps"] for i in a["instances"]
                 if i["state"] == "Ready" and i["pid"]]
        if ready:
            app_of, victim = rng.choice(ready)
            with contextlib.suppress(OperationFailed):
                client.request("kill", app=app_of, node=victim["node"], signal=9)
                kills += 1
                _err(f"killed {victim['id']} pid {victim['pid']}")
                took = _await_recovery(client, app_of, victim, end + 30)
                if took is not None:
                    recoveries += 1
                    slowest = max(slowest, took)
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    _out(f"chaos: {kills} kills, {recoveries} recoveries, slowest recovery {slowest * 1000:.0f} ms")
    if recoveries < kills:
        raise OperationFailed(f"{kills - recoveries} kill(s) did not recover")


def _await_recovery(client: ControlClient, app_name: str, victim: dict[str, Any],
                    deadline: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() < deadline:
        for doc in client.request("status", app=app_name)["apps"]:
            for i in doc["instances"]:
                if (i["node"] == victim["node"] and i["state"] == "Ready"
                        and i["pid"] != victim["pid"]):
                    return time.monotonic() - start
        time.sleep(0.01)
    return None


@app.command("repl")
def repl_cmd(home: HomeOption = None) -> None:
    """Attach a Python console to the running mesh (leaving it never stops the mesh)."""
    from mycelium.operator.repl import run_attached

    run_attached(home_of(home))
