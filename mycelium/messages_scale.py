"""The scale messages (placement, drains, scale to zero, autoscaling) of the mesh.

Kept in a module of their own only for size; :mod:`mycelium.messages` re-exports them and puts
them on the wire with every other message, so code imports them from there.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AppLoad", "DrainNode", "EdgeLoad", "NodeCapacity", "WakeApp"]



@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """An agent tells the fabric what its node offers (placement counts against it)."""

    node: str
    cpu: float
    mem_mb: int


@dataclass(frozen=True, slots=True)
class WakeApp:
    """The edge holds a request for an app with no instance: start one (scale from zero)."""

    app: str


@dataclass(frozen=True, slots=True)
class AppLoad:
    """One app's traffic at the edge since the last report."""

    app: str
    in_flight: float  # mean concurrent requests over the last second
    requests: int  # answered since the last report


@dataclass(frozen=True, slots=True)
class EdgeLoad:
    """The edge's periodic load report (only apps with traffic or whose load changed)."""

    loads: tuple[AppLoad, ...]


@dataclass(frozen=True, slots=True)
class DrainNode:
    """Move a node's instances elsewhere and place nothing new there (``undrain`` False)."""

    node: str
    undrain: bool = False
