"""The fabric's view of the rest of a mesh: other members' nodes, instances and plan writes.

A single-machine fabric has no peers (:class:`NoPeers`). A member of a multi-machine mesh
follows etcd (:class:`~mycelium.fabric.cluster.EtcdPeers`): its watch thread hands the fabric
:class:`PeerEvents` and :class:`PeerConnection` (inside a private message of the fabric to
itself, off the wire); the fabric passes each to :meth:`Peers.handle` in its mailbox,
which folds it into the remote view and answers with a :class:`PeerUpdate` — what the fabric
itself must apply (plans and budgets written elsewhere, slots freed, a re-sync). The fabric's
logic therefore exists once, whatever the mesh's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from mycelium.messages import Budget, InstanceInfo, Plan

__all__ = ["NoPeers", "PeerConnection", "PeerEvents", "PeerUpdate", "Peers", "fold_update"]


# What the watch thread hands the fabric, off the wire on purpose: they carry etcd events, which
# no one outside this process may forge.
@dataclass(frozen=True, slots=True)
class PeerEvents:
    """A batch of changes made by other members (from the watch thread to the fabric)."""

    events: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class PeerConnection:
    """The member's connection changed: ``etcd-lost``, ``etcd-back`` or ``lease-renewed``."""

    kind: str


@dataclass(frozen=True, slots=True)
class PeerUpdate:
    """What the fabric applies after its peers handled one message.

    Attributes:
        routes: The remote instances changed (the edge's routes may have).
        plans: Plans written (or, as ``None``, deleted) by another member, by app.
        budgets: Budgets written by another member.
        freed: Apps one of whose slots freed itself (a member died): offer them again.
        resynced: The view was re-read after etcd returned: broadcast every plan again.
        check_slots: Our lease was renewed after expiring: slots may have been taken meanwhile.
    """

    routes: bool = False
    plans: tuple[tuple[str, Plan | None], ...] = ()
    budgets: tuple[Budget, ...] = ()
    freed: tuple[str, ...] = ()
    resynced: bool = False
    check_slots: bool = False


class Peers(Protocol):
    """The other members of the mesh, as one fabric sees them."""

    def start(self, plans: Iterable[Plan], tell: Callable[[Any], None]) -> None:
        """Load the view and start following changes; ``tell`` delivers them to the fabric."""
        ...

    def stop(self) -> None:
        """Stop following (the successor of a crashed fabric starts its own)."""
        ...

    def handle(self, message: PeerEvents | PeerConnection) -> PeerUpdate:
        """Fold one message into the view; what the fabric must apply besides."""
        ...

    def publish(self, info: InstanceInfo) -> None:
        """Share one of this member's instances with the others."""
        ...

    def instances(self) -> list[InstanceInfo]:
        """The other members' instances."""
        ...

    def nodes(self, local: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """The mesh's live nodes by state (given this member's own) and those gone from it.

        Only live nodes count towards an app's desired instances; a gone node is ``lost``
        (vanished) or ``down`` (its member left on purpose).
        """
        ...

    def describe(self) -> dict[str, Any]:
        """Extra facts for the fabric's ``GetInfo`` answer."""
        ...

    def store_doc(self) -> dict[str, Any] | None:
        """The status document's ``fabric`` entry (which store, its connection), if any."""
        ...


class NoPeers:
    """A mesh of one machine: nothing to follow, nothing to share."""

    def start(self, plans: Iterable[Plan], tell: Callable[[Any], None]) -> None:
        """Nothing to follow."""

    def stop(self) -> None:
        """Nothing to stop."""

    def handle(self, message: PeerEvents | PeerConnection) -> PeerUpdate:
        """Nothing ever arrives; nothing to apply."""
        return PeerUpdate()

    def publish(self, info: InstanceInfo) -> None:
        """Nobody to share with."""

    def instances(self) -> list[InstanceInfo]:
        """None."""
        return []

    def nodes(self, local: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """This machine's nodes only; none is ever gone."""
        return dict(local), {}

    def describe(self) -> dict[str, Any]:
        """Nothing to add."""
        return {}

    def store_doc(self) -> dict[str, Any] | None:
        """None: the single-machine document has no ``fabric`` entry."""
        return None



def fold_update(update: PeerUpdate, plans: dict[str, Plan], budgets: dict[str, Budget],
                declined: dict[str, set[str]], generation: int) -> tuple[set[str], int]:
    """Fold the plans, budgets and freed slots other members changed into the fabric's maps.

    The maps change in place; a freed slot of a planned app forgets which nodes declined it,
    so the plan is offered to them again.

    Returns:
        The apps whose plan or budget changed (to broadcast), and the highest generation seen.
    """
    changed: set[str] = set()
    for app, plan in update.plans:
        if plan is None:
            if plans.pop(app, None) is not None:
                changed.add(app)
        elif plan != plans.get(app):
            plans[app] = plan
            generation = max(generation, plan.generation)
            declined.pop(app, None)
            changed.add(app)
    for budget in update.budgets:
        if budget != budgets.get(budget.app):
            budgets[budget.app] = budget
            changed.add(budget.app)
    for app in update.freed:
        if app in plans:  # a slot freed itself: offer the plan to our nodes again
            declined.pop(app, None)
            changed.add(app)
    return changed, generation
