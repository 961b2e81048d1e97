"""The live dashboard: the supervision tree, the apps, the supervision log and
per-app request/error rates in a browser, pushed as they change.

Served by the mesh process on its own loopback port, on its own event loop thread, read-only
(``GET`` only), from static files in this package (no build step, nothing fetched from
elsewhere). ``bind`` decides where it may listen, ``view`` and ``rates`` are pure, ``server``
is the aiohttp app.
"""

from __future__ import annotations

from mycelium.operator.dashboard.bind import (
    DashboardConfig,
    DashboardError,
    UnsafeBind,
    check_bind,
    is_loopback,
)
from mycelium.operator.dashboard.rates import Counts, RateHistory, parse_requests
from mycelium.operator.dashboard.server import Dashboard
from mycelium.operator.dashboard.view import LogIndex, build_view

__all__ = [
    "Counts",
    "Dashboard",
    "DashboardConfig",
    "DashboardError",
    "LogIndex",
    "RateHistory",
    "UnsafeBind",
    "build_view",
    "check_bind",
    "is_loopback",
    "parse_requests",
]
