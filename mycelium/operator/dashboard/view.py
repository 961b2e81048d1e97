"""The page's model, computed from the mesh's tree, its status and its supervision log.

Pure functions and one small index, so that what the browser shows is tested without a mesh:
the tree as ``mycelium tree --json`` gives it plus what only the log knows (when each child
last started, its pending backoff delay, its last exit), and the apps with their rollout
progress per node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mycelium.states import InstanceState

__all__ = ["LastExit", "LogIndex", "apps_view", "build_view", "tree_view"]

_MAX_PATHS = 10_000  # a long-lived mesh forgets the oldest children it indexed


def _epoch(ts: Any) -> float | None:
    """An RFC 3339 timestamp (or an epoch number) as epoch seconds; None if unreadable."""
    if isinstance(ts, int | float):
        return float(ts)
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class LastExit:
    """A child's last termination, as the supervision log told it."""

    ts: float
    reason: str | None


@dataclass(slots=True)
class LogIndex:
    """What the supervision log says about each child path (``supervisor/child``).

    The tree from the supervisors has each child's status and restart count, but not when it
    started, which backoff delay it is waiting out, nor why it last died: those are in the log.
    """

    started: dict[str, float] = field(default_factory=dict)
    backoff: dict[str, float] = field(default_factory=dict)
    exits: dict[str, LastExit] = field(default_factory=dict)

    def add(self, record: Mapping[str, Any]) -> None:
        """Fold one supervision log record in."""
        supervisor, child = record.get("supervisor"), record.get("child")
        if not supervisor or not child:
            return
        path = f"{supervisor}/{child}"
        ts = _epoch(record.get("ts"))
        event = record.get("event")
        if event == "started" and ts is not None:
            self.started[path] = ts
            self.backoff.pop(path, None)
        elif event == "backoff":
            delay = record.get("delay")
            if isinstance(delay, int | float):
                self.backoff[path] = float(delay)
        elif event == "child_terminated" and ts is not None:
            self.exits[path] = LastExit(ts, record.get("reason"))
        for table in (self.started, self.backoff, self.exits):
            if len(table) > _MAX_PATHS:
                table.pop(next(iter(table)))


def _state(node: Mapping[str, Any]) -> str:
    instance = node.get("instance")
    if isinstance(instance, Mapping) and instance.get("state"):
        return str(instance["state"])
    return str(node.get("status") or "running")


def tree_view(node: Mapping[str, Any], index: LogIndex, parent: str = "") -> dict[str, Any]:
    """One tree entry (and its children) as the page draws it.

    Args:
        node: A ``describe_tree`` entry, annotated with ``instance`` for app instances.
        index: What the log says about each child path.
        parent: The parent's path (workers carry no path of their own).
    """
    path = str(node.get("path") or (f"{parent}/{node.get('id')}" if parent else node.get("id")))
    instance = node.get("instance") if isinstance(node.get("instance"), Mapping) else None
    meta = node.get("meta") or {}
    entry: dict[str, Any] = {
        "id": node.get("id") or path,
        "path": path,
        "kind": node.get("kind") or node.get("type") or "worker",
        "strategy": node.get("strategy"),
        "status": node.get("status") or "running",
        "state": _state(node),
        "restarts": node.get("restarts") or 0,
        "app": meta.get("app"),
        "started_at": node.get("started_at") or index.started.get(path),
        "backoff": index.backoff.get(path) if node.get("status") == "restarting" else None,
        "pid": node.get("pid"),  # the root carries the mesh's own pid
        "digest": meta.get("digest"),
        "mailbox": node.get("mailbox"),  # messages waiting in the actor's inbox
    }
    if instance is not None:
        entry.update(pid=instance.get("pid"), instance=instance.get("id"),
                     restarts=max(entry["restarts"], instance.get("restarts") or 0),
                     started_at=instance.get("started_at") or entry["started_at"],
                     url=instance.get("url"), rss=instance.get("rss_bytes"),
                     ready_at=instance.get("ready_at"))
    last = index.exits.get(path)
    if last is not None:
        entry["last_exit"] = {"ts": last.ts, "reason": last.reason}
    entry["children"] = [tree_view(child, index, path) for child in node.get("children") or ()]
    return entry


def node_capacity(node: Mapping[str, Any]) -> str | None:
    """``cpu 0.3/2 · mem 112/24000 MB`` (reserved/capacity) or None when not known."""
    cpu, mem = node.get("cpu"), node.get("mem_mb")
    if not isinstance(cpu, Mapping) or not isinstance(mem, Mapping):
        return None
    return (f"cpu {cpu.get('reserved', 0):g}/{cpu.get('capacity', 0):g} · "
            f"mem {mem.get('reserved', 0)}/{mem.get('capacity', 0)} MB")


def apps_view(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each app with its numbers and, per node, its instances coloured blue (old) or green."""
    nodes = [str(n.get("name")) for n in status.get("nodes") or ()]
    room = {str(n.get("name")): node_capacity(n) for n in status.get("nodes") or ()}
    out = []
    for app in status.get("apps") or ():
        digest, previous = app.get("digest"), app.get("previous")
        if isinstance(previous, Mapping):
            previous = previous.get("digest")
        per_node: dict[str, list[dict[str, Any]]] = {n: [] for n in nodes}
        for inst in app.get("instances") or ():
            colour = "green" if inst.get("digest") == digest else "blue"
            per_node.setdefault(str(inst.get("node")), []).append({
                "id": inst.get("id"), "state": inst.get("state"), "pid": inst.get("pid"),
                "digest": inst.get("digest"), "colour": colour,
                "restarts": inst.get("restarts") or 0,
                "output": list(inst.get("output") or ()), "last_exit": inst.get("last_exit"),
                # Ready but out of the routes: a readiness check fails (shown as "unready")
                "unready": inst.get("state") == "Ready" and inst.get("serving") is False,
                "check": _failed_check(inst.get("last_check")),
                "status_text": inst.get("status_text")})
        green_ready = sum(1 for insts in per_node.values() for i in insts
                          if i["colour"] == "green" and i["state"] == InstanceState.READY)
        out.append({
            "app": app.get("app"), "digest": digest, "previous": previous,
            "min": app.get("min"), "max": app.get("max"), "desired": app.get("desired"),
            "ready": app.get("ready"), "state": app.get("state"), "reason": app.get("reason"),
            "green_ready": green_ready, "canary": _canary_view(app.get("canary")),
            "hosts": list(app.get("hosts") or []),
            "desired_reason": app.get("desired_reason"),
            "nodes": [{"node": n, "instances": insts, "capacity": room.get(n)}
                      for n, insts in per_node.items()],
        })
    return out


def _failed_check(last: object) -> str | None:
    """``name: detail`` of an instance's last check when it failed, else None."""
    if isinstance(last, Mapping) and last.get("ok") is False:
        return f"{last.get('check')}: {last.get('detail')}"
    return None


def _canary_view(canary: Any) -> dict[str, Any] | None:
    """A canary's share of requests and the 5xx rate of both digests (None: no canary)."""
    if not isinstance(canary, Mapping):
        return None
    old = canary.get("old")
    if not isinstance(old, Mapping):
        old = {}
    return {"weight": canary.get("weight"), "ready": canary.get("ready"),
            "count": canary.get("count"), "error_rate": canary.get("error_rate"),
            "old_error_rate": old.get("error_rate")}


def build_view(tree: Mapping[str, Any] | None, status: Mapping[str, Any] | None,
               index: LogIndex, error: str | None = None) -> dict[str, Any]:
    """The whole page model (``state`` events); ``error`` says why a part is missing."""
    status = status or {}
    return {
        "tree": None if tree is None else tree_view(tree, index),
        "apps": apps_view(status),
        "nodes": [dict(n) for n in status.get("nodes") or ()],
        "error": error,
    }
