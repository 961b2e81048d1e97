"""``mycelium promote``, ``mycelium history`` and ``mycelium rollback`` (docs/reference.md).

``promote`` continues an app's canary as its blue/green rollout; ``history`` lists every
deployment of an app, oldest first; ``rollback`` deploys an earlier one again as a new
generation and, with ``--wait``, follows it as ``deploy --wait`` does.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
import typer

from mycelium.errors import OperationFailed
from mycelium.operator.client import ControlClient

from .app import HomeOption, app, err, home_of, out
from .deploying import app_doc, judge, who

__all__ = ["history_cmd", "promote_cmd", "render_history", "rollback_cmd"]

AppArgument = Annotated[str, typer.Argument(metavar="APP", help="The app")]


@app.command("promote")
def promote_cmd(app_name: AppArgument, home: HomeOption = None) -> None:
    """Continue APP's canary: the blue/green rollout of the same generation (warmup, drain)."""
    plan = ControlClient(home_of(home)).request("promote", app=app_name)
    out(f"promoted {app_name} {plan['digest'][:12]} (generation {plan['generation']})")


def render_history(records: list[dict[str, Any]]) -> list[str]:
    """The human table of ``mycelium history`` (pure)."""
    lines = [f"{'GEN':>4}  {'DIGEST':12}  {'VERSION':10}  {'AT':20}  {'WHO':24}  OUTCOME"]
    for r in records:
        lines.append(f"{r['generation']:>4}  {r['digest'][:12]:12}  {r['version'][:10]:10}  "
                     f"{r['at']:20}  {r['who'][:24]:24}  {r['outcome']}")
    return lines


@app.command("history")
def history_cmd(app_name: AppArgument, home: HomeOption = None,
                as_json: Annotated[bool, typer.Option("--json", help="One JSON array")] = False
                ) -> None:
    """Every deployment of APP, oldest first, with its outcome."""
    records = ControlClient(home_of(home)).request("history", app=app_name)
    if as_json:
        out(orjson.dumps(records).decode())
        return
    for line in render_history(records):
        out(line)


@app.command("rollback")
def rollback_cmd(
    app_name: AppArgument,
    home: HomeOption = None,
    to: Annotated[str | None, typer.Option(
        "--to", metavar="GENERATION|DIGEST",
        help="The deployment to deploy again (default: the most recent superseded one)")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Wait until the rollout is done (exit 1 if it failed)")] = True,
) -> None:
    """Deploy an earlier deployment of APP again, as a new generation (blue/green)."""
    request = ControlClient(home_of(home)).request
    started = time.monotonic()
    plan = request("rollback", app=app_name, to=to or "", who=who())
    full, generation = plan["digest"], plan["generation"]
    if not wait:
        out(f"rolling {app_name} back to {full[:12]} (generation {generation}, not waiting)")
        return
    deadline = started + float(plan["timeout"]) + 5.0
    last = ""
    while True:
        view = judge(app_doc(request("status", app=app_name), app_name), full, generation)
        line = f"{app_name}: {view.ready}/{view.desired} Ready ({view.state})"
        if line != last:
            err(line)
            last = line
        if view.outcome == "done":
            out(f"rolled {app_name} back to {full[:12]} (generation {generation}): "
                f"{view.ready}/{view.desired} Ready in {time.monotonic() - started:.2f}s")
            return
        if view.outcome != "waiting":
            raise OperationFailed(f"rollback of {app_name} to {full[:12]} {view.outcome}"
                                  + (f": {view.detail}" if view.detail else ""))
        if time.monotonic() > deadline:
            raise OperationFailed(f"rollback of {app_name} to {full[:12]} timed out")
        time.sleep(0.05)
