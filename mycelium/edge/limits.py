"""How many client connections the edge may hold: bounded by config and by descriptors.

The in-process edge shares the mesh's descriptor table with the control plane (health probes,
workload pipes and log files, the fabric's database, the control socket). If clients could
take every descriptor, a probe's ``connect()`` or a spawn's ``pipe()`` would fail with
``EMFILE`` and healthy workloads would be restarted. So the edge caps its own connections
below the descriptor limit, keeping a reserve for the control plane, and the mesh raises its
soft ``RLIMIT_NOFILE`` to the hard limit when it starts.
"""

from __future__ import annotations

import contextlib
import resource

__all__ = ["FD_RESERVE_MIN", "connection_cap", "descriptor_limit", "raise_nofile_limit"]

FD_RESERVE_MIN = 256
"""Descriptors always left to the control plane, at the least (more with a high limit)."""


def connection_cap(configured: int, nofile: int) -> int:
    """The client connections the edge accepts at once: ``configured`` or fewer.

    Every client connection may hold one upstream connection too, so the descriptors left
    after the control plane's reserve are halved. The reserve is ``FD_RESERVE_MIN`` or an
    eighth of the limit, whichever is larger. At least one connection is always allowed.

    Args:
        configured: ``[edge] max_connections``.
        nofile: The soft ``RLIMIT_NOFILE`` of the process the edge runs in
            (``resource.RLIM_INFINITY`` or any negative value: unlimited).

    Returns:
        The effective limit, between 1 and ``configured``.
    """
    if nofile < 0 or nofile == resource.RLIM_INFINITY:
        return max(1, configured)
    reserve = max(FD_RESERVE_MIN, nofile // 8)
    return max(1, min(configured, (nofile - reserve) // 2))


def descriptor_limit() -> int:
    """This process's soft ``RLIMIT_NOFILE`` (-1 when unlimited)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return -1 if soft == resource.RLIM_INFINITY else int(soft)


def raise_nofile_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (as far as the kernel allows).

    Called once when a mesh starts, before any thread opens sockets. A failure leaves the
    limit as it was: the edge's cap (:func:`connection_cap`) still follows the real limit.

    Returns:
        The soft limit now in force (-1: unlimited).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return descriptor_limit()
