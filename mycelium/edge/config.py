"""Every tunable of the edge, with its default, validated once at the boundary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mycelium.defaults import usable_cpus
from mycelium.edge.errors import EdgeConfigError
from mycelium.edge.tls import TLSSettings

if TYPE_CHECKING:
    from mycelium.edge.hold import HoldGate
    from mycelium.operator.config import MeshConfig

__all__ = ["ACCESS_LOG_NAME", "EdgeConfig", "edge_config"]

ACCESS_LOG_NAME = "access.jsonl"
"""The access log's file name in ``<home>/logs``."""


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """How the edge listens, whom it names itself, and how patient it is.

    Attributes:
        host: Address to listen on (default 127.0.0.1: loopback only).
        port: TCP port; 0 picks a free one (read it back from ``EdgeServer.port``).
        edge_id: Sent as ``X-Mycelium-Edge`` on every response, the edge's own errors included.
        connect_timeout: Seconds to open a TCP connection to an upstream; on expiry the next
            endpoint is tried, and 504 is answered if every try timed out.
        read_timeout: Seconds the upstream may take to send its response head before the
            request fails with 504 (the body is bounded by ``stream_idle_timeout``).
        send_timeout: Seconds a client or upstream may refuse to accept our writes.
        header_timeout: Seconds a client has to deliver a whole request head, counted from
            the accept for a new connection and from its first byte on a kept-alive one
            (slowloris guard).
        body_timeout: Seconds a client may stay silent while sending a request body.
        keepalive_timeout: Seconds an idle client connection is kept open between requests.
        stream_idle_timeout: Seconds a response body may stay silent once its head arrived
            (an SSE stream may be quiet much longer than ``read_timeout``).
        tunnel_idle_timeout: Seconds an upgraded connection may carry no byte either way.
        tunnel_drain_timeout: Seconds a draining endpoint's tunnels stay open, then close.
        max_connections: Client connections held at once; beyond it a new connection is
            closed at once. The edge lowers it further to stay below the process's descriptor
            limit (see :func:`mycelium.edge.limits.connection_cap`).
        max_header_bytes: Largest request head accepted (431 beyond).
        max_body_bytes: Largest request body accepted (413 beyond); ``None`` means unlimited.
        max_fails: Connection failures within ``fail_timeout`` that take an endpoint out of
            rotation (nginx ``max_fails``).
        fail_timeout: Seconds the failures are counted over, and how long the endpoint is then
            skipped (nginx ``fail_timeout``).
        upstream_keepalive: Idle upstream connections kept per endpoint for reuse.
        forwarded_proto: Value of ``X-Forwarded-Proto`` for requests on the plain port
            (requests that came over TLS always send ``https``).
        eject_after: Consecutive failures (connect errors, timeouts, 5xx answers) that eject
            an endpoint from its app's rotation.
        eject_time: Seconds an endpoint stays ejected, times its ejection count.
        eject_max: Percentage of an app's endpoints that may be ejected at once (rounded
            down; one endpoint is always kept).
        access_log_home: The mesh home whose ``logs/access.jsonl`` receives the access log
            (one JSON object per request), or ``None`` for no access log.
        access_rotate_bytes: Size at which the access log rotates.
        access_keep: Rotated access log files kept.
        reuse_port: Bind with ``SO_REUSEPORT`` (edge worker processes share the port).
        workers: Edge worker processes (default: the CPUs this process may use); 0 runs the
            edge in the mesh's own process (a thread: for tests).
        event_loop: ``"auto"`` (uvloop when installed, else asyncio), ``"uvloop"`` or
            ``"asyncio"``.
        tls: The TLS listener (its port, certificate pairs, the HTTPS redirect), or
            ``None`` for plain HTTP only.
        run_dir: Where edge workers record themselves for the next mesh of the home
            (``<home>/run``; see :mod:`mycelium.edge.handover`), None: never adopted.
        orphan_timeout: Seconds a worker whose mesh died waits to be adopted before exiting.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    edge_id: str = "edge"
    connect_timeout: float = 2.0
    read_timeout: float = 30.0
    send_timeout: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 60.0
    stream_idle_timeout: float = 300.0
    tunnel_idle_timeout: float = 300.0
    tunnel_drain_timeout: float = 30.0
    max_connections: int = 10_000
    max_header_bytes: int = 32 * 1024
    max_body_bytes: int | None = 64 * 1024 * 1024
    max_fails: int = 1
    fail_timeout: float = 10.0
    upstream_keepalive: int = 64
    forwarded_proto: str = "http"
    eject_after: int = 5
    eject_time: float = 30.0
    eject_max: int = 50
    access_log_home: Path | None = None
    access_rotate_bytes: int = 10 * 1024 * 1024
    access_keep: int = 5
    reuse_port: bool = False
    workers: int = field(default_factory=usable_cpus)
    event_loop: str = "auto"
    tls: TLSSettings | None = None
    hold_timeout: float = 30.0
    hold_max: int = 1000
    on_wake: Callable[[str], None] | None = None
    """Told an app's name when requests start waiting for it (scale from zero)."""
    hold_gate: HoldGate | None = None
    """In an edge worker: where held requests ask the edge actor for their place."""
    run_dir: Path | None = None
    orphan_timeout: float = 600.0
    on_handover: Callable[[tuple[str, ...]], None] | None = None
    """Called once the workers no longer route to a previous mesh's instances, with the URLs
    they did route to (the mesh then drains and reaps those instances)."""

    def __post_init__(self) -> None:
        """Reject values that would make the edge hang or refuse everything.

        Raises:
            EdgeConfigError: A value is out of range; the message names the field.
        """
        if not 0 <= self.port <= 65535:
            raise EdgeConfigError(f"edge port {self.port} is not in 0..65535")
        if not self.edge_id or any(c in self.edge_id for c in "\r\n"):
            raise EdgeConfigError("edge_id must be a non-empty single-line string")
        for name in ("connect_timeout", "read_timeout", "send_timeout", "header_timeout",
                     "body_timeout", "keepalive_timeout", "fail_timeout", "eject_time",
                     "stream_idle_timeout", "tunnel_idle_timeout", "orphan_timeout"):
            if not getattr(self, name) > 0:
                raise EdgeConfigError(f"edge {name} must be > 0, got {getattr(self, name)!r}")
        if self.tunnel_drain_timeout < 0:
            raise EdgeConfigError("edge tunnel_drain_timeout must be >= 0")
        if self.max_header_bytes < 1024:
            raise EdgeConfigError("edge max_header_bytes must be >= 1024")
        if self.max_body_bytes is not None and self.max_body_bytes < 0:
            raise EdgeConfigError("edge max_body_bytes must be >= 0 or None")
        if self.max_fails < 1:
            raise EdgeConfigError("edge max_fails must be >= 1")
        if self.event_loop not in ("auto", "uvloop", "asyncio"):
            raise EdgeConfigError(f"edge event_loop must be auto, uvloop or asyncio, "
                                  f"got {self.event_loop!r}")
        if not self.hold_timeout > 0:
            raise EdgeConfigError(f"edge hold_timeout must be > 0, got {self.hold_timeout!r}")
        if self.hold_max < 1:
            raise EdgeConfigError(f"edge hold_max must be >= 1, got {self.hold_max!r}")
        if self.upstream_keepalive < 0:
            raise EdgeConfigError("edge upstream_keepalive must be >= 0")
        if self.max_connections < 1:
            raise EdgeConfigError("edge max_connections must be >= 1")
        if self.eject_after < 1:
            raise EdgeConfigError("edge eject_after must be >= 1")
        if not 0 <= self.eject_max <= 100:
            raise EdgeConfigError("edge eject_max must be a percentage, 0..100")
        if not 0 <= self.workers <= 256:
            raise EdgeConfigError("edge workers must be 0..256")
        if self.access_rotate_bytes < 1024 or self.access_keep < 0:
            raise EdgeConfigError("edge access_rotate_bytes must be >= 1024, access_keep >= 0")


def edge_config(cfg: MeshConfig, *, host: str, port: int, edge_id: str,
                home: Path, tls: TLSSettings | None = None) -> EdgeConfig:
    """The edge's settings from the mesh's ``[edge]`` (and ``[logs]``) configuration.

    Args:
        cfg: The loaded mesh configuration.
        host: Where the edge listens (``--edge-host`` wins over the file).
        port: The edge's port (``--edge-port``).
        edge_id: Sent as ``X-Mycelium-Edge``.
        home: The mesh home (the access log goes to its ``logs/``).
        tls: The TLS listener ``up`` asked for (``--tls-cert``, ``[[edge.certs]]``).
    """
    e = cfg.edge
    return EdgeConfig(
        host=host, port=port, edge_id=edge_id, connect_timeout=e.connect_timeout,
        read_timeout=e.read_timeout, max_body_bytes=e.max_body or None,
        max_connections=e.max_connections, header_timeout=e.header_timeout,
        keepalive_timeout=e.keepalive_timeout, stream_idle_timeout=e.stream_idle_timeout,
        tunnel_idle_timeout=e.tunnel_idle_timeout,
        tunnel_drain_timeout=cfg.rollout.tunnel_drain_timeout, eject_after=e.eject_after,
        eject_time=e.eject_time, eject_max=e.eject_max,
        access_log_home=home if e.access_log else None, workers=e.workers,
        access_rotate_bytes=cfg.logs.rotate_bytes, access_keep=cfg.logs.keep, tls=tls,
        hold_timeout=e.hold_timeout, hold_max=e.hold_max,
        run_dir=home / "run" if e.workers else None, orphan_timeout=e.orphan_timeout)
