"""The deploy defaults, written once: the CLI (both paths), the mesh and the messages use them.

Standard library only and nothing imported: ``mycelium deploy`` reads these on its fast path,
which must not pay for typing, dataclasses or pykka. ``[rollout] timeout`` in the
configuration (whose own default is :attr:`DeployDefaults.TIMEOUT`) is the mesh-wide default
of ``deploy --timeout``: the CLI sends no timeout when the flag is absent and the mesh fills
in its configured one.
"""

from __future__ import annotations

__all__ = ["DeployDefaults", "WorkloadDefaults", "usable_cpus"]


class WorkloadDefaults:
    """``[node]``'s isolation keys: who workloads run as, their PATH, their open-file limit."""

    RUN_AS = "dynamic"
    PATH = "/usr/local/bin:/usr/bin:/bin"
    NOFILE = 65536
    INSTANCES_DIR = "auto"
    CGROUP = "auto"  # the mesh's own cgroup v2, if writable; "off"; or a delegated directory


class DeployDefaults:
    """What ``deploy APP DIGEST`` means with no option given (docs/reference.md, deploy)."""

    MIN = 1
    """``--min``: Ready instances below which the app is degraded."""
    MAX = 1
    """``--max``: instances wanted (one per node at most)."""
    CPU = 0.1
    """``--cpu``: cores per instance, counted against a node's capacity."""
    MEM = 256
    """``--mem``: MiB per instance, counted against a node's capacity."""
    TIMEOUT = 60.0
    """``--timeout`` when ``[rollout] timeout`` is not configured: the rollout's health
    deadline in seconds."""
    SCALE_DOWN_AFTER = 30.0
    """``[scale] down_after``: seconds an autoscaled app (``--target-concurrency``) stays
    below its target before it scales down, in one step."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the
    machine's count): the default of ``[edge] workers``, one proxy process per core."""
    import os  # here, not at the top: the fast path imports this module for its constants

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
