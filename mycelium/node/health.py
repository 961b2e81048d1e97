"""Readiness probes and port allocation for workloads (SPEC §5).

A probe is one plain ``GET`` with :mod:`http.client`: it needs no event loop, so an instance's
helper thread can call it directly, and it costs one short TCP connection.
"""

from __future__ import annotations

import http.client
import socket
from urllib.parse import urlsplit

__all__ = ["free_port", "probe_health"]

#: How much of a probe's response body is read before the connection is closed.
_MAX_PROBE_BODY = 64 * 1024


def probe_health(url: str, timeout: float) -> bool:
    """Ask a workload once whether it is healthy.

    Why one request and no retry: the caller (the instance's health loop) owns the schedule, the
    startup deadline and the failure count; a probe only reports what it saw.

    Args:
        url: ``http://host:port/path`` of the workload's health endpoint (query kept).
        timeout: Seconds for connecting and for each read.

    Returns:
        True when the workload answered ``200``; False on any other status, a refused or reset
        connection, a timeout or a malformed response. Never raises for network trouble.

    Raises:
        ValueError: ``url`` is not an ``http://`` URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"health probe needs an http://host:port/path URL, got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "mycelium-probe", "Connection": "close"})
        response = conn.getresponse()
        response.read(_MAX_PROBE_BODY)
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the kernel picks it by binding port 0).

    Why this is good enough: the port is handed to the workload as ``PORT`` right away; if another
    process grabs it in between, the workload fails to bind, exits, and its supervisor starts a
    replacement with a fresh port.

    Raises:
        OSError: ``host`` cannot be bound (not a local address).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
