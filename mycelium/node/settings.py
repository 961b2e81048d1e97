"""What a node agent is configured with: its capacity and timings, and a verified spore's facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mycelium.node.isolation import Isolation
from supervisors import Backoff

__all__ = ["NodeSettings", "SporeInfo", "backoff_intensity"]


@dataclass(frozen=True, slots=True)
class SporeInfo:
    """What the agent needs from a verified spore's manifest."""

    path: Any
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    health: str = "/health"
    checks: tuple[Any, ...] = ()  # the manifest's CheckSpecs
    env_secrets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSettings:
    """One node's capacity and the timings its instances use.

    Every field the config file has (``[node]``, ``[instance]``, ``[restart]``, ``[logs]``)
    has no default here: the mesh passes its configured value, so the config is the one place
    for each default. Only the timings the config does not expose keep one.
    """

    cpu: float
    mem_mb: int
    health_interval: float
    health_timeout: float
    health_failures: int
    sample_interval: float
    stop_grace: float
    backoff: Backoff
    startup_deadline: float
    intensity: int
    period: float
    output_max_bytes: int
    """``[logs] output_max_mb`` in bytes: a workload's stream rotates beyond it."""
    output_files: int
    """``[logs] output_files``: files kept per stream."""
    output_keep: int
    """``[logs] output_keep``: instances of an app whose output is kept."""
    exec_checks_parallel: int
    """``[node] exec_checks_parallel``: exec health checks at once on the node."""
    isolation: Isolation | None
    """``[node] run_as``, ``path``, ``nofile``, ``instances_dir`` as resolved for the home: who
    workloads run as, their environment and limits (None: spawned as the mesh is)."""
    probe_interval: float = 0.01
    """Seconds between startup probes of one launching instance (not in the config)."""
    drain_grace: float = 0.5
    """Least seconds a drain waits for requests in flight (``stop_grace`` if longer)."""
    host: str = "127.0.0.1"
    """The address workloads listen on (tests and one machine: loopback)."""


def backoff_intensity(settings: NodeSettings) -> int:
    """The app supervisor's intensity: the configured one, raised to what backoff permits.

    Backoff already bounds how fast a crash-looping instance restarts. If intensity were below
    the number of backed-off restarts that fit into ``period``, the app supervisor would give up
    after a few seconds, ``apps`` would start a fresh one and the backoff would start over at
    ``base``: the delays would cycle instead of growing to ``cap``. With this bound a pure crash
    loop backs off to the cap and intensity only catches restarts faster than backoff allows.
    """
    b = settings.backoff
    elapsed, n = 0.0, 0
    while n < 1000:
        elapsed += min(b.cap, b.base * 2 ** n) * (1.0 - b.jitter)
        if elapsed > settings.period:
            break
        n += 1
    return max(settings.intensity, n + 1)
