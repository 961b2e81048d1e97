"""The records a desired-state file and a running mesh are compared as (frozen data)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mycelium.defaults import DeployDefaults

__all__ = ["COMPARED_KEYS", "DEFAULTS", "MANIFEST_KEYS", "SCALE_KEYS", "SETTING_KEYS",
           "DesiredApp", "RunningApp", "Settings"]

SETTING_KEYS = ("min", "max", "max_instances", "cpu", "mem", "warmup", "timeout")
"""The deploy settings a file may give, in the order they are compared and printed."""

COMPARED_KEYS = (*SETTING_KEYS, "hosts")
"""Everything compared beside the spore: the numeric settings and the app's host names."""

SCALE_KEYS = frozenset({"min", "max", "max_instances"})

MANIFEST_KEYS = ("name", "version", "health", "args", "env", "warmup", "env_secrets")
"""A manifest's input fields: what the signed manifest holds beside the binary's hash."""

DEFAULTS: dict[str, Any] = {"min": DeployDefaults.MIN, "max": DeployDefaults.MAX,
                            "cpu": DeployDefaults.CPU, "mem": DeployDefaults.MEM,
                            "timeout": DeployDefaults.TIMEOUT}
"""``mycelium deploy``'s defaults (``max_instances`` = ``max``; ``warmup`` = the manifest's;
``timeout``: the mesh's ``[rollout] timeout``, this one only if the mesh names none)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """An app's deploy settings, every one resolved (no default left to apply)."""

    min: int
    max: int
    max_instances: int
    cpu: float
    mem: int
    warmup: float
    timeout: float
    hosts: tuple[str, ...] = ()
    """Host names routed to the app (sorted, lower-case); a file without ``hosts`` has none."""

    def get(self, key: str) -> Any:
        """One setting by its file key."""
        return getattr(self, key)


@dataclass(frozen=True, slots=True)
class DesiredApp:
    """One ``[apps.NAME]`` table, validated.

    ``manifest`` holds the input fields (``MANIFEST_KEYS``) as JSON data; with ``binary_sha256``
    and ``binary_size`` it is the spore's identity. ``digest`` is set for a ``digest = …`` table;
    a ``binary`` + ``manifest`` table has ``binary`` and ``manifest_path`` instead, and is
    packed only when it differs from what runs.
    """

    name: str
    settings: Settings
    manifest: dict[str, Any]
    binary_sha256: str
    binary_size: int
    digest: str | None = None
    binary: Path | None = None
    manifest_path: Path | None = None
    line: int | None = None
    given: frozenset[str] = frozenset(SETTING_KEYS)
    """The settings the table names; the others are defaults (see :func:`with_mesh_defaults`)."""
    canary: tuple[int, int, float] = (0, 0, 0.0)
    """``(instances, weight, auto_promote)``: an update of the spore starts a canary (0: no)."""
    env_secrets: tuple[str, ...] = ()
    """The table's ``env_secrets``: secret names also given as environment variables."""

    @property
    def version(self) -> str:
        """The manifest's version."""
        return str(self.manifest["version"])

    def with_mesh_defaults(self, timeout: float) -> DesiredApp:
        """This app with the mesh's own default ``timeout`` where the table names none."""
        if "timeout" in self.given or self.settings.timeout == timeout:
            return self
        return replace(self, settings=replace(self.settings, timeout=timeout))


@dataclass(frozen=True, slots=True)
class RunningApp:
    """One planned app of the running mesh, as the control op ``desired`` describes it.

    ``manifest`` is ``None`` when the mesh could not read the spore of ``digest``; such an app
    never compares equal to a ``binary`` table (it is updated).
    """

    name: str
    digest: str
    generation: int
    settings: Settings
    manifest: dict[str, Any] | None = None
    binary_sha256: str = ""
    binary_size: int = 0
    status: str = "active"
    reason: str | None = None
    ready: int = 0
    env_secrets: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()
    """The ids of its live instances when the mesh was read."""

    @property
    def version(self) -> str:
        """The running spore's version ("?" when its manifest is unknown)."""
        return "?" if self.manifest is None else str(self.manifest["version"])

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RunningApp:
        """From one app of the ``desired`` op's reply."""
        budget = doc.get("budget") or {}
        settings = Settings(min=int(doc["min"]), max=int(doc["max"]),
                            max_instances=int(budget.get("max_instances", doc["max"])),
                            cpu=float(budget.get("cpu", 0.1)), mem=int(budget.get("mem", 256)),
                            warmup=float(doc.get("warmup", 0.0)),
                            timeout=float(doc.get("timeout", 60.0)),
                            hosts=tuple(doc.get("hosts") or ()))
        spore = doc.get("manifest")
        manifest = None if spore is None else {k: spore[k] for k in MANIFEST_KEYS if k in spore}
        return cls(name=str(doc["app"]), digest=str(doc["digest"]),
                   generation=int(doc.get("generation", 0)), settings=settings,
                   manifest=manifest,
                   binary_sha256=str((spore or {}).get("binary_sha256", "")),
                   binary_size=int((spore or {}).get("binary_size", 0)),
                   status=str(doc.get("plan_status") or "active"), reason=doc.get("reason"),
                   ready=int(doc.get("ready") or 0),
                   env_secrets=tuple(str(n) for n in doc.get("env_secrets") or ()),
                   instances=tuple(str(i) for i in doc.get("instances") or ()))
