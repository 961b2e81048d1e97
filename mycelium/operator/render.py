"""Human renderings of the live tree and the status document, for the CLI and the REPL.

Pure functions from the JSON documents the control socket returns (``tree`` and ``status``) to
text, so that ``mycelium tree``, ``mycelium status`` and the REPL's ``tree()``/``status()``
show the same thing and tests need no running mesh. The tree is drawn with rich (which comes
with typer); labels are built as :class:`rich.text.Text`, never as markup, so a name or reason
containing ``[brackets]`` is shown as it is.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mycelium.states import InstanceState

if TYPE_CHECKING:  # rich is imported when a tree is drawn: `mycelium status` starts faster
    from rich.text import Text
    from rich.tree import Tree

__all__ = ["format_uptime", "render_status", "render_tree", "tree_renderable"]

_STATUS_STYLE = {"running": "green", "restarting": "yellow", "undefined": "red"}
_STATE_STYLE: dict[str, str] = {
    InstanceState.READY: "green", InstanceState.LAUNCHING: "yellow", InstanceState.IDLE: "yellow",
    InstanceState.DRAINING: "cyan", InstanceState.STOPPED: "dim"}


def format_uptime(seconds: float) -> str:
    """A short duration for a human: ``4.2s``, ``3m07s``, ``2h05m``, ``3d04h``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _supervisor_label(node: Mapping[str, Any], now: float) -> Text:
    from rich.text import Text

    label = Text()
    label.append(str(node.get("id", "?")), style="bold")
    kind = "dynamic supervisor" if node.get("kind") == "dynamic_supervisor" else "supervisor"
    label.append(f"  {kind} {node.get('strategy', '?')}", style="blue")
    period = node.get("period")
    period_text = f"{period:g}s" if isinstance(period, int | float) else "?"
    label.append(f"  intensity {node.get('intensity', '?')}/{period_text}")
    _common(label, node, now)
    room = node.get("capacity")
    if isinstance(room, Mapping):
        label.append(_room(room).replace(" (", "  ", 1).rstrip(")"), style="dim")
        if room.get("state") not in (None, "up"):
            label.append(f"  {room['state']}", style="yellow")
    return label


def _worker_label(node: Mapping[str, Any], now: float) -> Text:
    from rich.text import Text

    label = Text()
    label.append(str(node.get("id", "?")), style="bold")
    inst = node.get("instance")
    if isinstance(inst, Mapping):
        state = str(inst.get("state", "?"))
        label.append(f"  {state}", style=_STATE_STYLE.get(state, ""))
        if inst.get("pid"):
            label.append(f"  pid {inst['pid']}")
        started = inst.get("started_at")
        if isinstance(started, int | float):
            label.append(f"  up {format_uptime(now - started)}")
        label.append(f"  restarts {inst.get('restarts', 0)}")
        if inst.get("url"):
            label.append(f"  {inst['url']}", style="dim")
        if inst.get("id"):
            label.append(f"  ({inst['id']})", style="dim")
        if inst.get("reason"):
            label.append(f"  reason {inst['reason']}", style="red")
        return label
    label.append("  worker", style="blue")
    _common(label, node, now)
    return label


def _common(label: Text, node: Mapping[str, Any], now: float) -> None:
    """Status, pid, uptime, restarts and mailbox depth: whatever the node carries."""
    status = str(node.get("status", "?"))
    label.append(f"  {status}", style=_STATUS_STYLE.get(status, ""))
    if node.get("pid"):
        label.append(f"  pid {node['pid']}")
    started = node.get("started_at")
    if isinstance(started, int | float):
        label.append(f"  up {format_uptime(now - started)}")
    restarts = node.get("restarts", 0)
    label.append(f"  restarts {restarts}", style="yellow" if restarts else "")
    if node.get("mailbox"):  # only a backlog is news; --json always has the number
        label.append(f"  mailbox {node['mailbox']}", style="yellow")


def tree_renderable(tree: Mapping[str, Any], now: float | None = None) -> Tree:
    """The tree document (``mycelium tree --json``) as a rich :class:`~rich.tree.Tree`.

    Args:
        tree: The root supervisor's description, as ``describe_tree`` plus the mesh's
            annotations (``instance`` on app workers, ``mailbox``, ``started_at``, ``pid``).
        now: Epoch seconds for uptimes (default: now).
    """
    from rich.tree import Tree

    now = time.time() if now is None else now

    def label(node: Mapping[str, Any]) -> Text:
        if node.get("type") == "supervisor":
            return _supervisor_label(node, now)
        return _worker_label(node, now)

    def add(parent: Tree, node: Mapping[str, Any]) -> None:
        branch = parent.add(label(node))
        for child in node.get("children") or ():
            add(branch, child)

    root = Tree(label(tree), guide_style="dim")
    for child in tree.get("children") or ():
        add(root, child)
    return root


def _to_text(renderable: Any, color: bool, width: int) -> str:
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=color, no_color=not color, width=width,
                      color_system="standard" if color else None, highlight=False,
                      emoji=False)
    console.print(renderable, soft_wrap=True)
    return buf.getvalue()


def render_tree(tree: Mapping[str, Any], *, color: bool = False, now: float | None = None,
                width: int = 200) -> str:
    """The tree as text, one line per supervisor or worker (never wrapped).

    Args:
        tree: See :func:`tree_renderable`.
        color: ANSI colours (for a terminal).
        now: Epoch seconds for uptimes (default: now).
        width: Only matters for rich's layout; lines are never wrapped.
    """
    return _to_text(tree_renderable(tree, now), color, width)


def _room(node: Mapping[str, Any]) -> str:
    """`` (cpu 0.3/2, mem 112/24000 MB)``: reserved/capacity, when the node reports them."""
    cpu, mem = node.get("cpu"), node.get("mem_mb")
    if not isinstance(cpu, Mapping) or not isinstance(mem, Mapping):
        return ""
    return (f" (cpu {cpu.get('reserved', 0):g}/{cpu.get('capacity', 0):g}, "
            f"mem {mem.get('reserved', 0)}/{mem.get('capacity', 0)} MB)")


def render_status(status: Mapping[str, Any]) -> str:
    """The ``status --json`` document as the plain lines ``mycelium status`` prints.

    An instance that is Ready but out of the routes (a readiness check fails) says
    ``not serving`` and which check failed; a workload's sd_notify ``STATUS=`` is shown quoted.
    """
    lines = []
    for doc in status.get("apps") or ():
        digest = (doc.get("digest") or "-")[:12]
        line = (f"{doc['app']}  {doc.get('state')}  digest {digest}  ready {doc.get('ready')}/"
                f"{doc.get('desired')} (min {doc.get('min')}, max {doc.get('max')})")
        if doc.get("reason"):
            line += f"  reason: {doc['reason']}"
        lines.append(line)
        canary = doc.get("canary")
        if canary:  # both digests, the canaries' share and the 5xx rate of each
            old = canary.get("old") or {}
            lines.append(f"  canary {str(canary.get('digest'))[:12]} {canary.get('ready')}/"
                         f"{canary.get('count')} Ready, {canary.get('weight')}% of requests, "
                         f"5xx {canary.get('error_rate')}% vs {old.get('error_rate')}% for "
                         f"{str(old.get('digest'))[:12]}")
        for i in doc.get("instances") or ():
            line = (f"  {i['id']:<24} {i['node']:<8} {i['state']:<9} "
                    f"pid {i.get('pid') or '-':<7} {i.get('url') or '-':<24} "
                    f"restarts {i.get('restarts', 0)}"
                    + (f"  uid {i['uid']}" if i.get("uid") is not None else ""))
            last = i.get("last_check") or {}
            if i.get("state") == "Ready" and i.get("serving") is False:
                line += "  not serving"
                if last and not last.get("ok"):
                    line += f" ({last.get('check')}: {last.get('detail')})"
            if i.get("status_text"):
                line += f"  \"{i['status_text']}\""
            lines.append(line)
    nodes = status.get("nodes") or ()
    lines.append("nodes: " + ", ".join(f"{n['name']} {n['state']}" + _room(n) for n in nodes))
    iso = status.get("isolation")
    if isinstance(iso, Mapping):
        lines.append(f"isolation: run_as {iso.get('run_as')}, limits: {iso.get('limits')}, "
                     f"instances in {iso.get('instances_dir')}"
                     + (f", containment: {iso['containment']}" if iso.get("containment") else ""))
    return "\n".join(lines)
