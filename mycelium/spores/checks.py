"""The manifest's ``checks``: health checks of four kinds in three roles, validated field by field.

A check is ``http`` (a GET on ``path``; 2xx/3xx pass), ``tcp`` (a connect to PORT), ``exec``
(``command`` run in the instance's directory; exit 0 passes) or ``notify`` (systemd's
sd_notify: ``READY=1`` passes). Its ``role`` says what a result means, as in Kubernetes:
``startup`` gates the others, ``readiness`` decides whether the edge routes to the instance,
``liveness`` restarts it. Every field is checked here, at pack/publish, with a reason that
names the check and the field, so a bad check never reaches a node. The normalised form (every
default written out) is what a spore carries and what its signature covers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ManifestError

__all__ = ["CHECK_ROLES", "CHECK_TYPES", "CheckSpec", "parse_checks"]

CHECK_TYPES = ("http", "tcp", "exec", "notify")
CHECK_ROLES = ("startup", "readiness", "liveness")
CHECK_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
MAX_CHECKS = 32
MAX_COMMAND = 256
MAX_STR = 4096
STARTUP_INTERVAL = 0.01
"""A startup check polls this often (seconds) by default, until the startup deadline."""

_COMMON = frozenset({"type", "role", "name", "interval", "timeout", "failures", "successes"})
_KEYS = {
    "http": _COMMON | {"path"},
    "tcp": _COMMON,
    "exec": _COMMON | {"command"},
    "notify": frozenset({"type", "role", "name", "watchdog"}),
}
_DEFAULTS = {  # role -> (interval, timeout, failures, successes); startup failures 0 = deadline
    "startup": (STARTUP_INTERVAL, 1.0, 0, 1),
    "readiness": (2.0, 1.0, 3, 1),
    "liveness": (2.0, 1.0, 3, 1),
}


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One validated check.

    ``failures`` consecutive failures make the check fail (for a startup check, 0 means "until
    the startup deadline"); ``successes`` consecutive passes make it pass. ``path`` is set for
    ``http`` only, ``command`` for ``exec`` only, ``watchdog`` (seconds, or None) for
    ``notify`` only.
    """

    type: str
    role: str
    name: str
    interval: float
    timeout: float
    failures: int
    successes: int
    path: str | None = None
    command: tuple[str, ...] = ()
    watchdog: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON data, every field that applies to its type explicit."""
        data: dict[str, Any] = {"type": self.type, "role": self.role, "name": self.name}
        if self.type == "notify":
            if self.watchdog is not None:
                data["watchdog"] = self.watchdog
            return data
        data.update(interval=self.interval, timeout=self.timeout, failures=self.failures,
                    successes=self.successes)
        if self.type == "http":
            data["path"] = self.path
        elif self.type == "exec":
            data["command"] = list(self.command)
        return data


def parse_checks(raw: object, health: str, *, in_spore: bool = False) -> tuple[CheckSpec, ...]:
    """Validate a manifest's ``checks`` list.

    Args:
        raw: The JSON value of ``checks``.
        health: The manifest's ``health`` path (an http check's default ``path``).
        in_spore: The list was found inside a spore (errors exit 1 instead of 2).

    Returns:
        The checks in the order written, defaults filled in.

    Raises:
        ManifestError: not a list of objects, an unknown or misplaced key, a bad value, or two
            checks with the same name; the message names the check and the field.
    """
    if not isinstance(raw, list):
        raise ManifestError(f"manifest: checks must be a list of objects, got {_kind(raw)}",
                            in_spore=in_spore)
    if len(raw) > MAX_CHECKS:
        raise ManifestError(f"manifest: more than {MAX_CHECKS} checks", in_spore=in_spore)
    checks: list[CheckSpec] = []
    for index, item in enumerate(raw):
        check = _parse_one(item, f"checks[{index}]", health, in_spore)
        if any(c.name == check.name for c in checks):
            raise ManifestError(f"manifest: checks[{index}]: name {check.name!r} is used by an "
                                "earlier check (give each check its own name)", in_spore=in_spore)
        if check.type == "notify" and any(c.type == "notify" for c in checks):
            raise ManifestError(f"manifest: checks[{index}]: only one notify check per "
                                "manifest (there is one NOTIFY_SOCKET)", in_spore=in_spore)
        checks.append(check)
    return tuple(checks)


def _parse_one(item: object, where: str, health: str, in_spore: bool) -> CheckSpec:
    def fail(message: str) -> ManifestError:
        return ManifestError(f"manifest: {where}{message}", in_spore=in_spore)

    if not isinstance(item, Mapping):
        raise fail(f" must be an object, got {_kind(item)}")
    kind = item.get("type")
    if kind not in CHECK_TYPES:
        got = "nothing" if kind is None else repr(kind)
        raise fail(f".type must be one of {', '.join(CHECK_TYPES)}, got {got}")
    for key in sorted(item):
        if key not in _KEYS[kind]:
            if key in _KEYS["http"] | _KEYS["exec"] | _KEYS["notify"]:
                raise fail(f": key {key!r} does not apply to a {kind} check")
            raise fail(f": unknown key {key!r}")
    role = item.get("role", "startup" if kind == "notify" else None)
    if role not in CHECK_ROLES:
        got = "nothing" if role is None else repr(role)
        raise fail(f".role must be one of {', '.join(CHECK_ROLES)}, got {got}")
    if kind == "notify" and role != "startup":
        raise fail(f".role of a notify check must be startup, got {role!r}")
    name = item.get("name", f"{kind}-{role}")
    if not isinstance(name, str) or not CHECK_NAME_RE.fullmatch(name):
        raise fail(f".name must match ^[a-z0-9][a-z0-9_.-]{{0,62}}$, got {name!r}")
    interval, timeout, failures, successes = _DEFAULTS[role]
    if kind == "notify":
        watchdog = item.get("watchdog")
        if watchdog is not None:
            watchdog = _seconds(watchdog, f"{where}.watchdog", in_spore, 0.001, 86_400.0)
        return CheckSpec(type=kind, role=role, name=name, interval=interval, timeout=timeout,
                         failures=failures, successes=successes, watchdog=watchdog)
    interval = _seconds(item.get("interval", interval), f"{where}.interval", in_spore,
                        0.001, 86_400.0)
    timeout = _seconds(item.get("timeout", timeout), f"{where}.timeout", in_spore, 0.001, 3600.0)
    failures = _count(item.get("failures", failures), f"{where}.failures", in_spore,
                      0 if role == "startup" else 1)
    successes = _count(item.get("successes", successes), f"{where}.successes", in_spore, 1)
    path: str | None = None
    command: tuple[str, ...] = ()
    if kind == "http":
        path = item.get("path", health)
        if (not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_STR
                or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in path)):
            raise fail(f".path must be a path starting with '/' without spaces or control "
                       f"characters, got {path!r}")
    elif kind == "exec":
        raw_command = item.get("command")
        if (not isinstance(raw_command, list) or not raw_command
                or len(raw_command) > MAX_COMMAND
                or not all(isinstance(a, str) and a and len(a) <= MAX_STR and "\x00" not in a
                           for a in raw_command)):
            raise fail(f".command must be a non-empty list of non-empty strings, got "
                       f"{_short(raw_command)}")
        command = tuple(raw_command)
    return CheckSpec(type=kind, role=role, name=name, interval=interval, timeout=timeout,
                     failures=failures, successes=successes, path=path, command=command)


def _seconds(value: object, where: str, in_spore: bool, low: float, high: float) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not low <= value <= high):
        raise ManifestError(f"manifest: {where} must be a number of seconds between {low:g} "
                            f"and {high:g}, got {_short(value)}", in_spore=in_spore)
    return float(value)


def _count(value: object, where: str, in_spore: bool, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1000:
        raise ManifestError(f"manifest: {where} must be an integer between {low} and 1000, "
                            f"got {_short(value)}", in_spore=in_spore)
    return value


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
