"""How plans read: ``plan``'s lines and JSON, and ``export``'s TOML (pure functions)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from .diff import ACTIONS, AppChange, Change
from .model import SETTING_KEYS, RunningApp

__all__ = ["counts", "export_toml", "plan_json", "plan_lines", "summary_line"]

SYMBOLS = {"create": "+", "update": "~", "scale": "~", "settings": "~", "unchanged": "=",
           "destroy": "-"}


def _short(digest: str | None) -> str:
    return "new" if digest is None else f"{digest[:12]}…"


def _value(field: str, value: Any) -> str:
    if field == "digest":
        return _short(value)  # None: only packing tells the new digest
    if value is None:
        return "unset" if field.startswith("env.") else "(none)"
    if field == "binary":
        return _short(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    if field in ("version", "health", "name"):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _change(change: Change) -> str:
    if change.field == "rollout":
        return f"last rollout {change.old}: retry"
    return f"{change.field} {_value(change.field, change.old)} → {_value(change.field, change.new)}"


def _details(item: AppChange) -> str:
    if item.action == "create" and item.desired is not None:
        want = item.desired
        parts = [f"version {want.version}", f"digest {_short(want.digest)}"]
        parts += [f"{k} {_value(k, want.settings.get(k))}" for k in ("min", "max")]
        return ", ".join(parts)
    if item.action == "destroy" and item.running is not None:
        return f"version {item.running.version}, digest {_short(item.running.digest)}"
    return ", ".join(_change(c) for c in item.changes)


def plan_lines(changes: Sequence[AppChange]) -> list[str]:
    """One line per app: ``hello  ~ update (version 1.0.0 → 1.1.0, …)``."""
    width = max((len(c.app) for c in changes), default=0)
    lines = []
    for item in changes:
        details = _details(item)
        text = f"{item.app:<{width}}  {SYMBOLS[item.action]} {item.action}"
        lines.append(f"{text} ({details})" if details else text)
    return lines


def counts(changes: Iterable[AppChange]) -> dict[str, int]:
    """How many apps get each action (every action present, zeros included)."""
    out = dict.fromkeys(ACTIONS, 0)
    for item in changes:
        out[item.action] += 1
    return out


def summary_line(changes: Sequence[AppChange], kept: int = 0) -> str:
    """``plan: 1 to create, 2 to update, …``; ``kept`` running apps the file does not name."""
    n = counts(changes)
    text = (f"plan: {n['create']} to create, {n['update']} to update, "
            f"{n['scale'] + n['settings']} to scale or reconfigure, {n['destroy']} to destroy, "
            f"{n['unchanged']} unchanged")
    if kept:
        text += f"; {kept} running app{'s' if kept != 1 else ''} not in the file kept " \
                "(--prune destroys them)"
    return text


def plan_json(changes: Sequence[AppChange], path: str, prune: bool,
              kept: Sequence[str] = ()) -> dict[str, Any]:
    """``plan --json``: each app's action, its field changes and digests, and the counts.

    A digest that only packing will tell is ``null`` with ``"pack": true``.
    """
    apps = [{"app": c.app, "action": c.action, "pack": c.pack,
             "digest": {"from": c.old_digest, "to": c.digest},
             "version": {"from": None if c.running is None else c.running.version,
                         "to": None if c.desired is None else c.desired.version},
             "changes": [{"field": x.field, "from": x.old, "to": x.new} for x in c.changes]}
            for c in changes]
    return {"file": path, "prune": prune, "apps": apps, "counts": counts(changes),
            "kept": list(kept),
            "changes": sum(1 for c in changes if c.changing)}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a TOML number: {value!r}")
        return repr(value)  # always with a dot or an exponent: stays a float in TOML
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    raise TypeError(f"no TOML form for {type(value).__name__}")


def export_toml(apps: Sequence[RunningApp], header: str = "") -> str:
    """The running desired state as a file ``plan`` reads back as all ``= unchanged``.

    Each app is a ``digest = …`` table with every setting spelt out (no default left to
    drift), sorted by name.
    """
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    for have in sorted(apps, key=lambda a: a.name):
        if out:
            out.append("")
        comment = f"  # version {have.version}" if have.manifest is not None else ""
        out.append(f"[apps.{have.name}]{comment}")
        out.append(f"digest = {_toml_value(have.digest)}")
        out += [f"{key} = {_toml_value(have.settings.get(key))}" for key in SETTING_KEYS]
        if have.settings.hosts:
            out.append(f"hosts = [{', '.join(map(_toml_value, have.settings.hosts))}]")
    return "\n".join(out) + "\n"
