"""Readiness probes and port allocation for workloads.

:func:`probe_health` is the blocking form of one probe of :mod:`.prober` (the node's single
non-blocking prober thread, where the probe itself lives): for callers that simply wait, such as
benchmarks and tests.
"""

from __future__ import annotations

import socket
import threading

from .prober import shared_prober

__all__ = ["free_port", "probe_health"]


def probe_health(url: str, timeout: float) -> bool:
    """Ask a workload once whether it is healthy, and wait for the answer.

    One request and no retry: the caller owns the schedule and the deadline; a probe only
    reports what it saw.

    Args:
        url: ``http://host:port/path`` of the workload's health endpoint (query kept).
        timeout: Seconds for the whole probe (connect, send, status line).

    Returns:
        True when the workload answered ``200``; False on any other status, a refused or reset
        connection, a timeout or a malformed response. Never raises for network trouble.

    Raises:
        ValueError: ``url`` is not an ``http://`` URL with a host.
    """
    answered = threading.Event()
    result: list[bool] = []

    def answer(ok: bool) -> None:
        result.append(ok)
        answered.set()

    shared_prober().probe(url, timeout, answer)
    answered.wait(timeout + 5.0)  # the prober answers within timeout (and a brief drain)
    return bool(result) and result[0]


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
