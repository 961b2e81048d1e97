"""What a node agent is configured with: its capacity and timings, and a verified spore's facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supervisors import Backoff

__all__ = ["NodeSettings", "SporeInfo", "backoff_intensity"]


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
