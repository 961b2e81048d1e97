"""Every tunable of the mesh, with its default, loaded once and validated at the boundary.

Precedence, lowest first: the defaults below < the TOML file (``--config FILE``, else
``<home>/mycelium.toml`` if present) < environment variables ``MYCELIUM_<SECTION>_<KEY>``
(e.g. ``MYCELIUM_EDGE_PORT=9090``). ``config/mycelium.toml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from mycelium.defaults import DeployDefaults, WorkloadDefaults, usable_cpus
from mycelium.errors import BadInput
from mycelium.home import Home
from mycelium.operator.control_server import IDLE_TIMEOUT, MAX_CONNECTIONS
from mycelium.priority import DEFAULT_CONTROL_NICE

__all__ = [
    "ConfigError",
    "EdgeSection",
    "FabricSection",
    "InstanceSection",
    "LogsSection",
    "MeshConfig",
    "MeshSection",
    "NodeSection",
    "RestartSection",
    "RolloutSection",
    "ScaleSection",
    "SporesSection",
    "UiSection",
    "load_config",
]

ENV_PREFIX = "MYCELIUM_"
CONFIG_FILE = "mycelium.toml"
_MIB = 1024 * 1024


class ConfigError(BadInput):
    """The configuration is wrong; the message names the key (exit 2, nothing started)."""


def _key(default: Any, lo: float | None = None, hi: float | None = None,
         *, lo_open: bool = False) -> Any:
    """A config field: its default and inclusive range (``lo_open``: strictly above ``lo``)."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "lo_open": lo_open})


def _computed(factory: Any, lo: float | None = None, hi: float | None = None,
              *, lo_open: bool = True) -> Any:
    """A config field whose default depends on the machine."""
    return field(default_factory=factory, metadata={"lo": lo, "hi": hi, "lo_open": lo_open})


def _optional() -> Any:
    """An optional string key: unset (None) unless given; the shipped file shows it commented
    out."""
    return field(default_factory=lambda: None, metadata={"lo": None, "hi": None})


def _cpu_count() -> float:
    return float(os.cpu_count() or 1)


def _total_mem_mb() -> int:
    return int(psutil.virtual_memory().total // _MIB)


@dataclass(frozen=True, slots=True)
class MeshSection:
    """``[mesh]``: how many node agents ``mycelium up`` starts (``--nodes``), and how many
    nice steps its own threads run below the edge workers and workloads (``control_nice``,
    0 = off; :mod:`mycelium.priority`)."""

    nodes: int = _key(3, 1, 256)
    control_nice: int = _key(DEFAULT_CONTROL_NICE, 0, 19)


@dataclass(frozen=True, slots=True)
class EdgeSection:
    """``[edge]``: the reverse proxy and the dashboard port (0 = off)."""

    host: str = _key("127.0.0.1")
    port: int = _key(8080, 1, 65535)
    connect_timeout: float = _key(2.0, 0, 3600, lo_open=True)
    read_timeout: float = _key(30.0, 0, 3600, lo_open=True)
    max_body: int = _key(64 * _MIB, 0, 2**40)
    ui_port: int = _key(0, 0, 65535)
    max_connections: int = _key(10_000, 1, 10_000_000)
    header_timeout: float = _key(10.0, 0, 3600, lo_open=True)
    keepalive_timeout: float = _key(60.0, 0, 86_400, lo_open=True)
    stream_idle_timeout: float = _key(300.0, 0, 86_400, lo_open=True)
    tunnel_idle_timeout: float = _key(300.0, 0, 86_400, lo_open=True)
    access_log: bool = _key(False)
    eject_after: int = _key(5, 1, 1000)
    eject_time: float = _key(30.0, 0, 86_400, lo_open=True)
    eject_max: int = _key(50, 0, 100)
    workers: int = _computed(usable_cpus, 0, 256, lo_open=False)
    orphan_timeout: float = _key(600.0, 0, 86_400, lo_open=True)
    tls_port: int = _key(8443, 0, 65535)
    certs: tuple[tuple[str, str], ...] = field(default_factory=tuple,
                                               metadata={"pairs": ("cert", "key")})
    hold_timeout: float = _key(30.0, 0, 3600, lo_open=True)
    hold_max: int = _key(1000, 1, 1_000_000)


@dataclass(frozen=True, slots=True)
class NodeSection:
    """``[node]``: the capacity each node agent offers to budgets (defaults: this machine), and
    who its workloads run as (see docs/reference.md#isolation)."""

    cpu: float = _computed(_cpu_count, 0, 4096)
    mem_mb: int = _computed(_total_mem_mb, 0, 2**32)
    exec_checks_parallel: int = _key(4, 1, 256)
    run_as: str = _key(WorkloadDefaults.RUN_AS)
    path: str = _key(WorkloadDefaults.PATH)
    nofile: int = _key(WorkloadDefaults.NOFILE, 16, 2**30)
    instances_dir: str = _key(WorkloadDefaults.INSTANCES_DIR)
    cgroup: str = _key(WorkloadDefaults.CGROUP)


@dataclass(frozen=True, slots=True)
class InstanceSection:
    """``[instance]``: how one app instance is started, probed, sampled and stopped."""

    startup_deadline: float = _key(30.0, 0, 3600, lo_open=True)
    health_interval: float = _key(1.0, 0, 3600, lo_open=True)
    health_timeout: float = _key(1.0, 0, 3600, lo_open=True)
    health_failures: int = _key(3, 1, 1000)
    stop_grace: float = _key(5.0, 0, 3600)
    mem_sample_interval: float = _key(1.0, 0, 3600, lo_open=True)


@dataclass(frozen=True, slots=True)
class RestartSection:
    """``[restart]``: an app supervisor's patience and its backoff between respawns."""

    intensity: int = _key(5, 0, 10_000)
    period: float = _key(30.0, 0, 86_400, lo_open=True)
    backoff_base: float = _key(0.01, 0, 3600)
    backoff_cap: float = _key(30.0, 0, 86_400)
    backoff_jitter: float = _key(0.1, 0, 1)
    reset_after: float = _key(10.0, 0, 86_400)


@dataclass(frozen=True, slots=True)
class RolloutSection:
    """``[rollout]``: blue/green updates (Flow D)."""

    parallel: int = _key(1, 1, 1000)
    timeout: float = _key(DeployDefaults.TIMEOUT, 0, 86_400, lo_open=True)
    history_keep: int = _key(50, 1, 100_000)
    tunnel_drain_timeout: float = _key(30.0, 0, 86_400)


@dataclass(frozen=True, slots=True)
class ScaleSection:
    """``[scale]``: autoscaling (``deploy --target-concurrency``)."""

    down_after: float = _key(DeployDefaults.SCALE_DOWN_AFTER, 0, 86_400, lo_open=True)


@dataclass(frozen=True, slots=True)
class ControlSection:
    """``[control]``: the control socket's bounds (idle connections cost no thread)."""

    max_connections: int = _key(MAX_CONNECTIONS, 1, 10_000)
    idle_timeout: float = _key(IDLE_TIMEOUT, 0, 3600, lo_open=True)


@dataclass(frozen=True, slots=True)
class SporesSection:
    """``[spores]``: size limits checked before a spore is extracted."""

    max_archive_mb: int = _key(1024, 1, 4095)
    max_binary_mb: int = _key(1024, 1, 4095)


@dataclass(frozen=True, slots=True)
class LogsSection:
    """``[logs]``: rotation of the supervision log; workloads' output kept per instance."""

    rotate_bytes: int = _key(10 * _MIB, 1024, 2**40)
    keep: int = _key(5, 0, 1000)
    output_max_mb: int = _key(10, 1, 1 << 20)
    output_files: int = _key(5, 1, 1000)
    output_keep: int = _key(5, 1, 1000)


@dataclass(frozen=True, slots=True)
class UiSection:
    """``[ui]``: where the dashboard listens (its port is ``edge.ui_port``, 0 = off).

    A host that is not a loopback address is refused unless ``allow_remote`` is true: the
    dashboard shows the whole mesh to whoever reaches it.
    """

    host: str = _key("127.0.0.1")
    allow_remote: bool = _key(False)


@dataclass(frozen=True, slots=True)
class FabricSection:
    """``[fabric]``: how a member reaches etcd (``--fabric etcds://…``).

    ``ca`` verifies etcd's certificate (default: the system's CAs); ``cert`` and ``key`` are
    the client certificate for TLS client auth; ``user`` authenticates to etcd with the
    password from ``MYCELIUM_ETCD_PASSWORD`` (never in this file).
    """

    ca: str | None = _optional()
    cert: str | None = _optional()
    key: str | None = _optional()
    user: str | None = _optional()


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """The whole configuration: one frozen section per TOML table."""

    mesh: MeshSection = field(default_factory=MeshSection)
    edge: EdgeSection = field(default_factory=EdgeSection)
    node: NodeSection = field(default_factory=NodeSection)
    instance: InstanceSection = field(default_factory=InstanceSection)
    restart: RestartSection = field(default_factory=RestartSection)
    rollout: RolloutSection = field(default_factory=RolloutSection)
    scale: ScaleSection = field(default_factory=ScaleSection)
    control: ControlSection = field(default_factory=ControlSection)
    spores: SporesSection = field(default_factory=SporesSection)
    logs: LogsSection = field(default_factory=LogsSection)
    ui: UiSection = field(default_factory=UiSection)
    fabric: FabricSection = field(default_factory=FabricSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{section: {key: value}}``, as the TOML file spells it."""
        return dataclasses.asdict(self)


#: Section name → its dataclass (each MeshConfig field's default_factory is the class itself).
_SECTIONS: dict[str, type[Any]] = {
    f.name: f.default_factory  # type: ignore[misc]  # mypy sees a factory, it is the class
    for f in dataclasses.fields(MeshConfig)}


def _describe(kind: str, meta: Mapping[str, Any]) -> str:
    """``"an integer 1-65535"``, ``"a number > 0"``: what a key accepts, for error messages."""
    noun = {"int": "an integer", "float": "a number", "str": "a string",
            "bool": "true or false"}[kind]
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None:
        return noun
    if meta.get("lo_open"):
        return f"{noun} > {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
    return f"{noun} {lo:g}-{hi:g}" if hi is not None else f"{noun} >= {lo:g}"


def _check(where: str, kind: str, meta: Mapping[str, Any], value: Any,
           from_env: bool = False) -> Any:
    """The value converted to the key's type, or a ConfigError naming the key."""
    kind = kind.removesuffix(" | None")  # an optional key: given, it is checked as its type
    bad = ConfigError(f"config: {where} must be {_describe(kind, meta)}, got {value!r}")
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise bad
        return value
    if kind == "bool":
        if from_env and isinstance(value, str):
            value = {"true": True, "1": True, "yes": True, "on": True, "false": False,
                     "0": False, "no": False, "off": False}.get(value.strip().lower(), value)
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(value, str) and from_env:  # the environment has only strings
        try:
            value = int(value) if kind == "int" else float(value)
        except ValueError:
            raise bad from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad
    if kind == "int":
        if not isinstance(value, int):
            raise bad
    else:
        value = float(value)
        if not math.isfinite(value):
            raise bad
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value <= lo if meta.get("lo_open") else value < lo):
        raise bad
    if hi is not None and value > hi:
        raise bad
    return value


def _check_pairs(where: str, value: Any, from_env: bool) -> tuple[tuple[str, str], ...]:
    """An array of ``{cert = "…", key = "…"}`` tables (``[[edge.certs]]``) as path pairs."""
    bad = ConfigError(f"config: {where} must be [[edge.certs]] tables with a cert and a key "
                      f"path each, got {value!r}")
    if from_env or not isinstance(value, list):
        raise bad
    pairs = []
    for table in value:
        if (not isinstance(table, dict) or set(table) != {"cert", "key"}
                or not all(isinstance(v, str) and v for v in table.values())):
            raise bad
        pairs.append((table["cert"], table["key"]))
    return tuple(pairs)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config: file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None


def _layer_from_env(env: Mapping[str, str]) -> dict[str, dict[str, tuple[str, Any]]]:
    """``MYCELIUM_<SECTION>_<KEY>`` variables, by section and key.

    Only variables whose section is known are read, so ``MYCELIUM_HOME`` or a workload's
    ``MYCELIUM_NODE`` are left alone; an unknown key in a known section is a typo and an error.
    """
    layer: dict[str, dict[str, tuple[str, Any]]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, sep, key = name[len(ENV_PREFIX):].partition("_")
        section, key = section.lower(), key.lower()
        if section not in _SECTIONS or not sep:
            continue
        known = {f.name for f in dataclasses.fields(_SECTIONS[section])}
        if key not in known:
            raise ConfigError(f"config: unknown setting {name} (no key {section}.{key}; "
                              f"known: {', '.join(sorted(known))})")
        layer.setdefault(section, {})[key] = (f"{name} ({section}.{key})", value)
    return layer


def _layer_from_file(data: Mapping[str, Any], path: Path
                     ) -> dict[str, dict[str, tuple[str, Any]]]:
    layer: dict[str, dict[str, tuple[str, Any]]] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"config: key {section} in {path} must be inside a [section] "
                              f"(known: {', '.join(_SECTIONS)})")
        if section not in _SECTIONS:
            raise ConfigError(f"config: unknown section [{section}] in {path} "
                              f"(known: {', '.join(_SECTIONS)})")
        known = {f.name for f in dataclasses.fields(_SECTIONS[section])}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"config: unknown key {section}.{key} in {path} "
                                  f"(known: {', '.join(sorted(known))})")
            layer.setdefault(section, {})[key] = (f"{section}.{key}", value)
    return layer


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None, *,
                home: Home | Path | None = None) -> MeshConfig:
    """Build the configuration: defaults < file < environment.

    Args:
        path: ``--config FILE``; it must exist. None: ``<home>/mycelium.toml`` if present.
        env: The environment to read ``MYCELIUM_<SECTION>_<KEY>`` from (None: ``os.environ``).
        home: The mesh home (or its root) whose ``mycelium.toml`` is used when ``path`` is None.

    Raises:
        ConfigError: the file is missing or not TOML; an unknown section or key; a value of the
            wrong type or out of range; ``restart.backoff_cap`` below ``restart.backoff_base``;
            ``edge.ui_port`` equal to ``edge.port``; a non-loopback ``ui.host`` without
            ``ui.allow_remote``.
    """
    env = os.environ if env is None else env
    if path is None and home is not None:
        root = home.root if isinstance(home, Home) else Path(home)
        candidate = root / CONFIG_FILE
        path = candidate if candidate.is_file() else None
    layers = []
    if path is not None:
        layers.append(_layer_from_file(_read_file(Path(path)), Path(path)))
    layers.append(_layer_from_env(env))

    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        values: dict[str, Any] = {}
        kinds = {f.name: f for f in dataclasses.fields(cls)}
        for layer in layers:
            for key, (where, raw) in layer.get(name, {}).items():
                spec = kinds[key]
                from_env = where.startswith(ENV_PREFIX)
                if "pairs" in spec.metadata:
                    values[key] = _check_pairs(where, raw, from_env)
                    continue
                values[key] = _check(where, str(spec.type), spec.metadata, raw,
                                     from_env=from_env)
        sections[name] = cls(**values)
    config = MeshConfig(**sections)
    _check_coherent(config)
    return config


def _check_coherent(config: MeshConfig) -> None:
    """Rules between keys: each key alone was already checked."""
    if config.restart.backoff_cap < config.restart.backoff_base:
        raise ConfigError(f"config: restart.backoff_cap ({config.restart.backoff_cap:g}) must "
                          f"be >= restart.backoff_base ({config.restart.backoff_base:g})")
    if config.edge.ui_port and config.edge.ui_port == config.edge.port:
        raise ConfigError(f"config: edge.ui_port must differ from edge.port "
                          f"(both {config.edge.port})")
    host = config.ui.host.strip("[]")
    try:
        loopback = host.lower() == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not config.ui.allow_remote:
        raise ConfigError(f"config: ui.host {config.ui.host!r} is not a loopback address; the "
                          f"dashboard only listens there unless ui.allow_remote = true")
