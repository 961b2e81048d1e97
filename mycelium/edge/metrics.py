"""The edge's counters and their Prometheus text exposition.

Hand-written rather than prometheus-client: the edge needs five families and one histogram,
updated on its own event loop thread only, and the exposition format is a few lines. A client
library would add a dependency and a lock on the hot path for nothing.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

__all__ = ["BUCKETS", "GAUGES", "EdgeMetrics", "Snapshot", "combine", "counters_only"]

Snapshot = dict[str, Any]
"""An :class:`EdgeMetrics`' values as JSON-able data (see :meth:`EdgeMetrics.snapshot`)."""

GAUGES = ("active", "connections", "tunnels")
"""Snapshot keys that are gauges (a process's values now), not counters."""

BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                              2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the upstream latency histogram; ``+Inf`` is implied."""


def _label(value: str) -> str:
    """Escape a label value per the exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class EdgeMetrics:
    """Counts requests, retries and upstream latency; renders them for ``/_mycelium/metrics``.

    Mutated only on the edge's event loop; ``set_restarts`` may replace the restart map from
    any thread (one attribute store).
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.retries: dict[str, int] = {}
        self.upstream_failures: dict[str, int] = {}
        self._hist: dict[str, list[float]] = {}  # app → bucket counts + [sum, count]
        self.restarts: Mapping[str, int] = {}
        self.active = 0
        self.connections = 0
        self.refused = 0
        self.ejections: dict[str, int] = {}
        self.tunnels: dict[str, int] = {}  # app → upgraded connections open now
        self.ejected: Mapping[str, int] = {}  # app → endpoints out of rotation now
        self.peers: Snapshot | None = None
        """The other edge worker processes' values, added when rendering (one attribute
        store from any thread replaces them)."""

    def snapshot(self) -> Snapshot:
        """Every value as JSON-able data (on the loop thread: the counters are read whole)."""
        return {"requests": {f"{app}\x00{code}": n for (app, code), n in self.requests.items()},
                "retries": dict(self.retries), "upstream_failures": dict(self.upstream_failures),
                "hist": {app: list(h) for app, h in self._hist.items()},
                "ejections": dict(self.ejections), "refused": self.refused,
                "active": self.active, "connections": self.connections,
                "tunnels": dict(self.tunnels)}

    def _load(self, snap: Snapshot) -> None:
        for key, n in snap.get("requests", {}).items():
            app, _, code = key.partition("\x00")
            self.requests[(app, int(code))] = int(n)
        self.retries = dict(snap.get("retries", {}))
        self.upstream_failures = dict(snap.get("upstream_failures", {}))
        self._hist = {app: list(h) for app, h in snap.get("hist", {}).items()}
        self.ejections = dict(snap.get("ejections", {}))
        self.refused = int(snap.get("refused", 0))
        self.active = int(snap.get("active", 0))
        self.connections = int(snap.get("connections", 0))
        self.tunnels = dict(snap.get("tunnels", {}))

    def request(self, app: str, status: int) -> None:
        """Count one answered request of ``app`` (``""`` for the edge's own paths)."""
        key = (app, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def answered(self, app: str, status: int, seconds: float) -> None:
        """:meth:`request` and :meth:`observe` in one call (the fast path's)."""
        key = (app, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.observe(app, seconds)

    def retry(self, app: str) -> None:
        """Count one retry of a request on another endpoint."""
        self.retries[app] = self.retries.get(app, 0) + 1

    def upstream_failure(self, app: str) -> None:
        """Count one failed attempt to reach an upstream (refused, reset, timed out)."""
        self.upstream_failures[app] = self.upstream_failures.get(app, 0) + 1

    def ejection(self, app: str) -> None:
        """Count one endpoint of ``app`` ejected as an outlier."""
        self.ejections[app] = self.ejections.get(app, 0) + 1

    def observe(self, app: str, seconds: float) -> None:
        """Record the time from sending a request upstream to its response head."""
        hist = self._hist.get(app)
        if hist is None:
            hist = self._hist[app] = [0.0] * (len(BUCKETS) + 3)
        hist[bisect_left(BUCKETS, seconds)] += 1
        hist[-2] += seconds
        hist[-1] += 1

    def latency_totals(self) -> dict[str, tuple[int, float]]:
        """app → (requests, seconds spent upstream) so far (read from any thread: a copy)."""
        return {app: (int(h[-1]), h[-2]) for app, h in dict(self._hist).items()}

    def render(self) -> str:
        """Return the Prometheus text exposition (format 0.0.4), the peers' values added."""
        peers = self.peers
        if not peers:
            return self._render()
        merged = EdgeMetrics()
        merged._load(combine(self.snapshot(), peers))
        merged.restarts, merged.ejected = self.restarts, self.ejected
        return merged._render()

    def _render(self) -> str:
        out = [
            "# HELP mycelium_edge_requests_total Requests answered by the edge, by app and status.",
            "# TYPE mycelium_edge_requests_total counter",
        ]
        for (app, code), n in sorted(self.requests.items()):
            out.append(f'mycelium_edge_requests_total{{app="{_label(app)}",code="{code}"}} {n}')
        out += ["# HELP mycelium_edge_retries_total Requests retried on another endpoint.",
                "# TYPE mycelium_edge_retries_total counter"]
        for app, n in sorted(self.retries.items()):
            out.append(f'mycelium_edge_retries_total{{app="{_label(app)}"}} {n}')
        out += ["# HELP mycelium_edge_upstream_failures_total Failed upstream attempts.",
                "# TYPE mycelium_edge_upstream_failures_total counter"]
        for app, n in sorted(self.upstream_failures.items()):
            out.append(f'mycelium_edge_upstream_failures_total{{app="{_label(app)}"}} {n}')
        out += ["# HELP mycelium_edge_tunnels Upgraded connections (WebSockets) open, by app.",
                "# TYPE mycelium_edge_tunnels gauge"]
        for app, n in sorted(self.tunnels.items()):
            out.append(f'mycelium_edge_tunnels{{app="{_label(app)}"}} {n}')
        out += ["# HELP mycelium_edge_ejections_total Endpoints ejected as outliers, by app.",
                "# TYPE mycelium_edge_ejections_total counter"]
        for app, n in sorted(self.ejections.items()):
            out.append(f'mycelium_edge_ejections_total{{app="{_label(app)}"}} {n}')
        out += ["# HELP mycelium_edge_ejected_endpoints Endpoints out of rotation now, by app.",
                "# TYPE mycelium_edge_ejected_endpoints gauge"]
        for app, n in sorted(self.ejected.items()):
            out.append(f'mycelium_edge_ejected_endpoints{{app="{_label(app)}"}} {n}')
        out += ["# HELP mycelium_edge_upstream_latency_seconds Time to response head.",
                "# TYPE mycelium_edge_upstream_latency_seconds histogram"]
        for app, hist in sorted(self._hist.items()):
            label = _label(app)
            cumulative = 0.0
            for bound, count in zip(BUCKETS, hist, strict=False):
                cumulative += count
                out.append(f'mycelium_edge_upstream_latency_seconds_bucket{{app="{label}",'
                           f'le="{bound}"}} {int(cumulative)}')
            out.append(f'mycelium_edge_upstream_latency_seconds_bucket{{app="{label}",le="+Inf"}} '
                       f"{int(hist[-1])}")
            out.append(f'mycelium_edge_upstream_latency_seconds_sum{{app="{label}"}} {hist[-2]}')
            out.append(f'mycelium_edge_upstream_latency_seconds_count{{app="{label}"}} '
                       f"{int(hist[-1])}")
        out += ["# HELP mycelium_app_restarts Respawns of the app's instances (all nodes).",
                "# TYPE mycelium_app_restarts gauge"]
        for app, n in sorted(self.restarts.items()):
            out.append(f'mycelium_app_restarts{{app="{_label(app)}"}} {n}')
        out += ["# HELP mycelium_edge_active_requests Requests in flight.",
                "# TYPE mycelium_edge_active_requests gauge",
                f"mycelium_edge_active_requests {self.active}",
                "# HELP mycelium_edge_connections Client connections open.",
                "# TYPE mycelium_edge_connections gauge",
                f"mycelium_edge_connections {self.connections}",
                "# HELP mycelium_edge_connections_refused_total Connections closed at accept "
                "because the edge was full.",
                "# TYPE mycelium_edge_connections_refused_total counter",
                f"mycelium_edge_connections_refused_total {self.refused}"]
        return "\n".join(out) + "\n"


def _merge_map(a: Mapping[str, Any], b: Mapping[str, Any], sign: int) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, list):
            base = out.get(key) or [0.0] * len(value)
            out[key] = [x + sign * y for x, y in zip(base, value, strict=False)]
        else:
            out[key] = out.get(key, 0) + sign * value
    return {k: v for k, v in out.items() if v}


def combine(a: Snapshot, b: Snapshot, sign: int = 1) -> Snapshot:
    """``a + b`` (or ``a - b`` with ``sign=-1``), key by key: how the edge actor sums its
    workers' snapshots, and takes one worker's own part out of the total."""
    out: Snapshot = {}
    for key in set(a) | set(b):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) or isinstance(y, dict):
            out[key] = _merge_map(x or {}, y or {}, sign)
        else:
            out[key] = (x or 0) + sign * (y or 0)
    return out


def counters_only(snap: Snapshot) -> Snapshot:
    """``snap`` without its gauges: what a worker that exited still adds to the totals."""
    return {k: v for k, v in snap.items() if k not in GAUGES}
