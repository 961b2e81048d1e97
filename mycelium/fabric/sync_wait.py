"""A restarted fabric's wait for its agents' answers (:class:`AgentSync`): pure bookkeeping."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SyncWait"]


class SyncWait:
    """Which of its nodes a restarted fabric still waits for, and which must hear it again.

    While it waits, the fabric grants no slot and pushes no routes: what the agents run decides
    both. Every node of the fabric is waited for, not only those with an agent when it started:
    an agent that starts during the wait (its node crashed with the fabric) may have missed the
    question, so its :class:`SyncRequest` is answered with the question again, and with its
    plans only once the wait is over (before, the fabric knows neither where each app runs nor
    which apps the node keeps).
    """

    def __init__(self) -> None:
        self.waiting: set[str] = set()
        self._asked: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def begin(self, nodes: Iterable[str]) -> None:
        """Wait for the answers of ``nodes``."""
        self.waiting = set(nodes)

    def asked(self, node: str) -> bool:
        """``node``'s agent asks for its plans: True if they must wait for the wait's end
        (the node is then told them by :meth:`end`)."""
        if not self.waiting:
            return False
        self._asked.add(node)
        return True

    def answered(self, node: str) -> bool:
        """``node`` answered: True if it was the last one waited for."""
        if node not in self.waiting:
            return False
        self.waiting.discard(node)
        return not self.waiting

    def end(self) -> list[str]:
        """The wait is over (every answer, or the deadline): the nodes to send their plans."""
        self.waiting.clear()
        again, self._asked = sorted(self._asked), set()
        return again
