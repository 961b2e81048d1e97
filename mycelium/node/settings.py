"""What a node agent is configured with: its capacity and timings, and a verified spore's facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supervisors import Backoff

__all__ = ["NodeSettings", "SporeInfo"]


@dataclass(frozen=True, slots=True)
class SporeInfo:
    """What the agent needs from a verified spore's manifest."""

    path: Any
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    health: str = "/health"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """One node's capacity and the timings its instances use (from the mesh config)."""

    cpu: float
    mem_mb: int
    probe_interval: float = 0.01
    health_interval: float = 2.0
    health_timeout: float = 1.0
    health_failures: int = 3
    sample_interval: float = 1.0
    stop_grace: float = 5.0
    drain_grace: float = 0.5
    # the config's [restart] defaults (the mesh always passes its configured backoff)
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.01, cap=30.0, reset_after=10.0))
    host: str = "127.0.0.1"
    startup_deadline: float = 30.0
    intensity: int = 5
    period: float = 30.0
    # the config's [logs] output_* keys: workload output kept per stream and per app
    output_max_bytes: int = 10 * 1024 * 1024
    output_files: int = 5
    output_keep: int = 5
