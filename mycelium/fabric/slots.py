"""How the fabric grants slots: the one place that bounds an app to ``max_instances``.

A slot is a node's right to run one instance of an app. The fabric asks its :class:`SlotClaims`
and never counts holders itself. :class:`LocalSlots` is a set per app, exact because the
fabric's mailbox serialises every claim. Where the fabric places itself (many instances per
node, one machine or a mesh of members), its placement answers a node's claim first: the slot
is granted when the placement gave the node an instance, and these slots only remember who
holds one (a mesh's single placer, elected in etcd, keeps ``max_instances`` across members).
"""

from __future__ import annotations

from typing import Protocol

from mycelium.messages import SlotReply

__all__ = ["LocalSlots", "SlotClaims"]


class SlotClaims(Protocol):
    """The slots of every app, as the fabric sees them."""

    def claim(self, app: str, node: str, limit: int) -> SlotReply:
        """Grant ``node`` a slot of ``app`` if fewer than ``limit`` are held (idempotent)."""
        ...

    def release(self, app: str, node: str) -> None:
        """``node`` gave its slot of ``app`` back."""
        ...

    def adopt(self, app: str, node: str) -> None:
        """``node`` runs ``app`` already (an agent's re-sync after a fabric restart)."""
        ...

    def evict(self, app: str, limit: int) -> set[str]:
        """Take the slots beyond ``limit`` back (scaled down); the local nodes that lost one."""
        ...

    def lost(self) -> list[tuple[str, str]]:
        """(app, node) slots this fabric's nodes held but no longer do (taken while cut off)."""
        ...


class LocalSlots:
    """The slots of one machine: a set of holder nodes per app, in the fabric's memory.

    After a fabric restart the set is rebuilt from the agents' re-sync (:meth:`adopt`).
    """

    def __init__(self) -> None:
        self._holders: dict[str, set[str]] = {}

    def claim(self, app: str, node: str, limit: int) -> SlotReply:
        """Grant a slot unless ``limit`` nodes hold one already."""
        holders = self._holders.setdefault(app, set())
        if node in holders:
            return SlotReply(True)
        if len(holders) >= limit:
            return SlotReply(False, f"max_instances reached ({len(holders)}/{limit})")
        holders.add(node)
        return SlotReply(True)

    def release(self, app: str, node: str) -> None:
        """Forget ``node``'s slot."""
        self._holders.get(app, set()).discard(node)

    def adopt(self, app: str, node: str) -> None:
        """Count ``node`` as a holder."""
        self._holders.setdefault(app, set()).add(node)

    def evict(self, app: str, limit: int) -> set[str]:
        """The last nodes (by name) beyond ``limit`` give their slot back."""
        holders = self._holders.get(app, set())
        evicted = set(sorted(holders)[limit:]) if len(holders) > limit else set()
        holders -= evicted
        return evicted

    def lost(self) -> list[tuple[str, str]]:
        """None: nobody else grants this machine's slots."""
        return []
