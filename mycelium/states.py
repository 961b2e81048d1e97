"""The mesh's state words, each defined once: an instance's state, a plan's status, an app's.

They are :class:`~enum.StrEnum` members, so each one *is* its string: the JSON of ``status``,
the wire and the etcd keys carry exactly the same words as before, and a state read back from
JSON (a plain ``str``) compares equal to its member. Code names the member, never the string.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["LIVE_STATES", "AppState", "InstanceState", "PlanStatus"]


class InstanceState(StrEnum):
    """Where one instance is in its life: Idle → Launching → Ready → Draining → Stopped."""

    IDLE = "Idle"
    """Built, not started yet."""
    LAUNCHING = "Launching"
    """Extracting, spawning, or probing for its first healthy answer."""
    READY = "Ready"
    """Healthy: in the edge's routes."""
    DRAINING = "Draining"
    """Out of the routes, finishing requests in flight before it stops."""
    STOPPED = "Stopped"
    """Its workload is gone (``reason`` says why, if it failed)."""


LIVE_STATES = frozenset({InstanceState.LAUNCHING, InstanceState.READY})
"""The states of an instance whose workload runs and is not leaving."""


class PlanStatus(StrEnum):
    """A plan's outcome: ``active``, or ``failed`` (rolled back, with a ``reason``)."""

    ACTIVE = "active"
    FAILED = "failed"


class AppState(StrEnum):
    """One documented word for an app in ``status`` (see :func:`mycelium.fabric.app_state`)."""

    STOPPED = "stopped"
    """No plan."""
    FAILED = "failed"
    """The last update was rolled back."""
    UPDATING = "updating"
    """Instances of another digest still run."""
    CANARY = "canary"
    """Canaries of the new digest run beside the old one, waiting for ``promote``."""
    RUNNING = "running"
    """At least ``min`` and the desired number Ready."""
    CRASHLOOP = "crashloop"
    """Below ``min`` while an instance keeps restarting."""
    STARTING = "starting"
    """Below ``min`` within the rollout's deadline."""
    DEGRADED = "degraded"
    """Below ``min`` after the rollout's deadline."""
    IDLE = "idle"
    """Scaled to zero (``--min 0``): no instance until a request arrives."""
