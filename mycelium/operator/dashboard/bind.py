"""Where the dashboard may listen, decided before anything binds.

The dashboard shows the whole mesh (pids, digests, crash reasons) to whoever reaches its port,
so by default it only listens on a loopback address; another address needs an explicit
``[ui] allow_remote = true``. It also never shares the edge's port: the edge may face the world,
the dashboard must not ride along.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mycelium.errors import BadInput, OperationFailed

__all__ = ["DashboardConfig", "DashboardError", "UnsafeBind", "check_bind", "is_loopback"]


class DashboardError(OperationFailed):
    """The dashboard could not start (port taken) or was misused (started twice)."""


class UnsafeBind(BadInput):
    """A bind address or port the dashboard refuses (exit 2, nothing started)."""


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """How the dashboard listens and what it reads.

    Attributes:
        port: TCP port; 0 picks a free one (the CLI's ``--ui-port 0`` means "off" and never
            gets here).
        host: Listening address; loopback unless ``allow_remote``.
        allow_remote: Accept a non-loopback ``host`` (``[ui] allow_remote``).
        edge_port: The edge's port, which the dashboard must not take (None: unknown).
        edge_host: Where to read the edge's counters (``/_mycelium/metrics``).
        sample_interval: Seconds between two looks at the tree while a browser watches.
        rates_interval: Seconds between two samples of the edge's counters.
        rates_window: Seconds of request/error history kept for the charts.
    """

    port: int = 0
    host: str = "127.0.0.1"
    allow_remote: bool = False
    edge_port: int | None = None
    edge_host: str = "127.0.0.1"
    sample_interval: float = 0.5
    rates_interval: float = 2.0
    rates_window: float = 300.0


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and every loopback address (127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(config: DashboardConfig) -> DashboardConfig:
    """Validate where the dashboard is about to listen; return the config unchanged.

    Raises:
        UnsafeBind: the port is out of range or is the edge's, or the host is not a loopback
            address and ``allow_remote`` is off.
    """
    if not 0 <= config.port <= 65535:
        raise UnsafeBind(f"dashboard: port must be 0-65535, got {config.port}")
    if config.port and config.edge_port is not None and config.port == config.edge_port:
        raise UnsafeBind(f"dashboard: port {config.port} is the edge's port; the dashboard "
                         f"never shares it (pick another --ui-port)")
    if not config.host:
        raise UnsafeBind("dashboard: empty host")
    if not config.allow_remote and not is_loopback(config.host):
        raise UnsafeBind(f"dashboard: refusing to listen on {config.host}, which is not a "
                         f"loopback address; set [ui] allow_remote = true to expose it")
    return config
