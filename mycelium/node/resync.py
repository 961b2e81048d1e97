"""An agent's answer to a restarted fabric (:class:`AgentSync`): complete, or late.

A restarted fabric places every app from what each agent says runs on its node. An agent that
restarted at the same moment (both crashed at once) knows its adopted instances only from their
supervisor's meta until each reports again; answering then would tell the fabric that the node
runs nothing, and the fabric would start those apps elsewhere. So the answer waits until every
instance of the node has reported, or :data:`ANSWER_WAIT` seconds at most.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mycelium.messages import AgentSync, InstanceInfo

__all__ = ["ANSWER_WAIT", "SyncAnswer", "complete"]

ANSWER_WAIT = 1.0
"""Seconds an agent waits for its instances' reports before it answers with what it knows
(less than the fabric's wait for the answers, ``SYNC_GRACE``)."""


class Here(Protocol):
    """What the agent holds of one app on its node."""

    @property
    def children(self) -> Mapping[str, Any]: ...  # child id → the agent's view of it

    @property
    def infos(self) -> Mapping[str, InstanceInfo]: ...  # child id → its last report


def complete(apps: Mapping[str, Here]) -> bool:
    """Whether every instance child of the node has reported at least once."""
    return all(child in here.infos for here in apps.values() for child in here.children)


class SyncAnswer:
    """The AgentSync one node owes a restarted fabric.

    Args:
        node: The node's name.
        tell_fabric: Tells the fabric a message.
    """

    def __init__(self, node: str, tell_fabric: Callable[[Any], object]) -> None:
        self._node = node
        self._tell = tell_fabric
        self._owed = False

    def owe(self, apps: Mapping[str, Here]) -> bool:
        """A fabric asked: answer now if every instance has reported (True), else when the last
        one has (:meth:`answer` after each report) or when :data:`ANSWER_WAIT` is over (the
        caller's timer, then ``answer(force=True)``)."""
        self._owed = True
        return self.answer(apps)

    def answer(self, apps: Mapping[str, Here], force: bool = False) -> bool:
        """Send the owed answer if it is complete (or ``force``); True once none is owed."""
        if not self._owed:
            return True
        if not force and not complete(apps):
            return False
        infos = tuple(i for here in apps.values() for i in here.infos.values())
        self._tell(AgentSync(self._node, tuple(apps), infos))
        self._owed = False
        return True
