"""What the fabric's scaling needs from a mesh of several members (nothing, on one machine).

On one machine the fabric's :class:`~.scale_hooks.ScaleHooks` place every instance on their own
nodes. Members of a mesh share etcd, and placement must stay ONE decision, or two members
would place the same instance twice: one member at a time is the **placer** (elected through
an etcd key under its lease). The placer runs the very same placement and scaling over every
member's nodes and publishes each app's counts per node; every member (the placer too) tells
its own agents their counts from that. The rest of the shared facts — nodes' capacities, the
edges' in-flight counts, wake requests, drains and what a drain cannot move — travel through
etcd too. :class:`MeshScale` is that seam; :class:`~.etcd_scale.EtcdScale` implements it.

How the edges' counts combine: each member's edge measures its own in-flight mean (Little's
law over its own requests), and these add up — two edges with 3 requests in flight each are 6
in flight to the app. Each member publishes its latest report under its lease (so a dead
member's load leaves with it) and every fabric feeds the **sum over members** to its scaler;
only the placer's decision is applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mycelium.messages import AppLoad

__all__ = ["MeshChange", "MeshScale", "Published"]


@dataclass(frozen=True, slots=True)
class Published:
    """One app's placement as the placer published it."""

    counts: Mapping[str, int]
    desired: int
    reason: str


@dataclass(slots=True)
class MeshChange:
    """What one batch of shared facts changed (for the hooks to apply).

    Attributes:
        capacity: A node's capacity appeared, changed or left (its member died).
        loads: Apps whose summed load changed, each with the requests of the new report.
        wakes: Apps a member's edge holds requests for.
        drains: The drained nodes changed.
        placement: The published placement changed (followers tell their agents).
        became_leader: This member just became the placer.
    """

    capacity: bool = False
    loads: list[AppLoad] = field(default_factory=list)
    wakes: list[str] = field(default_factory=list)
    drains: bool = False
    placement: bool = False
    became_leader: bool = False


@runtime_checkable
class MeshScale(Protocol):
    """The shared side of scaling for one member (also its :class:`~.scaler.DrainBook`)."""

    member: str

    def load(self) -> list[str]:
        """The drained nodes of the mesh (durable)."""
        ...

    def save(self, nodes: list[str]) -> None:
        """Replace the drained nodes (only the differences are written)."""
        ...

    def drained(self) -> list[str]:
        """The drained nodes as last seen (no etcd call)."""
        ...

    def start(self, tell: Callable[[Any], None]) -> None:
        """Read the shared facts, stand for placer, follow changes (``tell`` delivers them)."""
        ...

    def stop(self) -> None:
        """Stop following."""
        ...

    def owns(self, message: Any) -> bool:
        """Whether ``message`` is one of the follower thread's deliveries."""
        ...

    def handle(self, message: Any) -> MeshChange:
        """Fold one delivery into the shared view."""
        ...

    def leader(self) -> bool:
        """Whether this member places for the mesh now."""
        ...

    def capacity(self) -> Mapping[str, tuple[float, int]]:
        """Every live node of the mesh → (cpu, mem MB) it offers."""
        ...

    def publish_capacity(self, node: str, cpu: float, mem: int) -> None:
        """Share one of this member's nodes' capacity."""
        ...

    def publish_load(self, loads: Iterable[AppLoad]) -> list[AppLoad]:
        """Share this member's edge report; the same apps' loads summed over members."""
        ...

    def wake(self, app: str) -> None:
        """Ask the placer to wake ``app`` (this member's edge holds requests for it)."""
        ...

    def recent_wakes(self, within: float) -> list[str]:
        """Apps woken by any member within the last ``within`` seconds."""
        ...

    def placement(self) -> Mapping[str, Published]:
        """Every app's published placement."""
        ...

    def publish(self, app: str, placed: Published | None) -> bool:
        """Publish (or, None, withdraw) one app's placement; False if not the placer."""
        ...

    def stuck(self) -> Mapping[str, list[str]]:
        """Draining node → what it cannot shed, as the placer published it."""
        ...

    def publish_stuck(self, stuck: Mapping[str, list[str]]) -> None:
        """Publish what draining nodes cannot shed (the placer only)."""
        ...
