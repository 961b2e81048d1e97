"""``mycelium node drain NODE`` / ``node undrain NODE``: empty a node, or open it again.

A drain asks the mesh to place the node's instances elsewhere; each leaves once its
replacement is Ready, so requests never fail. With ``--wait`` (the default) the command
follows the node's state in ``status`` until it is ``drained`` (exit 0), until an instance is
reported to have nowhere to go (exit 1: it keeps running there and the node stays
``draining``), or until ``--timeout`` (exit 1).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from mycelium.errors import OperationFailed
from mycelium.operator.client import ControlClient

from .app import HomeOption, app, err, home_of, out

__all__ = ["drain_node", "node_app"]

node_app = typer.Typer(help="Drain a node (move its instances elsewhere) or open it again.",
                       no_args_is_help=True)
app.add_typer(node_app, name="node")

_STUCK_FOR = 1.0
"""Seconds an instance must have had nowhere to go before ``--wait`` gives up on it."""


def _node_doc(status: dict[str, Any], node: str) -> dict[str, Any]:
    for doc in status.get("nodes", []):
        if doc.get("name") == node:
            return dict(doc)
    return {"name": node, "state": "unknown"}


def drain_node(request: Any, node: str, *, wait: bool, timeout: float) -> None:
    """Drain ``node`` and (with ``wait``) follow it until drained.

    Raises:
        OperationFailed: something has nowhere to go, or the timeout passed.
    """
    started = time.monotonic()
    reply = request("node", action="drain", node=node)
    if not wait:
        out(f"draining {node} ({reply.get('state', 'draining')}, not waiting)")
        return
    stuck_since: float | None = None
    last = ""
    while True:
        doc = _node_doc(request("status"), node)
        state, stuck = doc.get("state"), doc.get("stuck") or []
        line = f"{node}: {state}"
        if line != last:
            err(line)
            last = line
        now = time.monotonic()
        if state == "drained":
            out(f"drained {node} in {now - started:.2f}s")
            return
        if stuck:
            stuck_since = now if stuck_since is None else stuck_since
            if now - stuck_since >= _STUCK_FOR:
                raise OperationFailed(f"{node} stays draining: {'; '.join(stuck)}")
        else:
            stuck_since = None
        if now - started > timeout:
            raise OperationFailed(f"drain of {node} timed out after {timeout:g}s ({state})")
        time.sleep(0.05)


@node_app.command("drain")
def drain_cmd(
    node: Annotated[str, typer.Argument(metavar="NODE", help="The node to empty")],
    home: HomeOption = None,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Wait until the node is drained (exit 1 if something has "
                                 "nowhere to go) or return at once")] = True,
    timeout: Annotated[float, typer.Option(
        "--timeout", help="Seconds to wait for the node to be drained")] = 60.0,
) -> None:
    """Move NODE's instances elsewhere (replacements Ready first); place nothing new there."""
    if timeout <= 0:
        raise typer.BadParameter(f"--timeout must be > 0, got {timeout:g}")
    drain_node(ControlClient(home_of(home)).request, node, wait=wait, timeout=timeout)


@node_app.command("undrain")
def undrain_cmd(
    node: Annotated[str, typer.Argument(metavar="NODE", help="The node to open again")],
    home: HomeOption = None,
) -> None:
    """Open NODE to new instances again (what runs elsewhere stays there)."""
    reply = ControlClient(home_of(home)).request("node", action="undrain", node=node)
    out(f"undrained {node} ({reply.get('state', 'up')})")
