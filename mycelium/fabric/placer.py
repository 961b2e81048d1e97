"""The fabric's placement book: how many instances of each app each node runs, and why.

The fabric owns one :class:`Placer`. It remembers what each node offers (the agents say so with
:class:`~mycelium.messages.NodeCapacity`), which nodes are draining or drained, how many
instances each app wants (its plan's limit, or what scale to zero and autoscaling decided) and
the counts it last handed out; :meth:`Placer.assign` re-runs the pure
:func:`~mycelium.fabric.scaling.place` for every app, oldest plan first, so an app deployed
later never pushes an earlier one off a full node. A draining node keeps its instances of an
app until that app's replacements elsewhere are Ready (the fabric says when, with ``ready``),
so a drain never drops a request; an app with no room elsewhere stays there and the drain
reports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mycelium.messages import Budget, Plan

from .scaling import NodeRoom, place

__all__ = ["Placer"]


@dataclass(slots=True)
class _Drain:
    """A node being emptied: what it still runs per app, and what has nowhere to go."""

    held: dict[str, int] = field(default_factory=dict)
    stuck: dict[str, str] = field(default_factory=dict)


class Placer:
    """Counts per (app, node) for the nodes of this fabric (see the module docstring).

    Args:
        drained: Nodes drained before (durable state read back at start).
    """

    def __init__(self, drained: Iterable[str] = ()) -> None:
        self.capacity: dict[str, tuple[float, int]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.want: dict[str, int] = {}
        self.reason: dict[str, str] = {}
        self._drains: dict[str, _Drain] = {n: _Drain() for n in drained}

    # -- nodes -----------------------------------------------------------------------------

    def set_capacity(self, node: str, cpu: float, mem: int) -> bool:
        """Record what a node offers; whether that changed."""
        if self.capacity.get(node) == (cpu, mem):
            return False
        self.capacity[node] = (cpu, mem)
        return True

    def drain(self, node: str) -> bool:
        """Close a node to new instances; whether it was open."""
        if node in self._drains:
            return False
        self._drains[node] = _Drain(held={app: by_node[node] for app, by_node in
                                          self.counts.items() if by_node.get(node, 0) > 0})
        return True

    def undrain(self, node: str) -> bool:
        """Open a node again; whether it was closed. What it still runs counts as placed."""
        drain = self._drains.pop(node, None)
        if drain is None:
            return False
        for app, n in drain.held.items():
            self.counts.setdefault(app, {})[node] = n
        return True

    def drained_nodes(self) -> list[str]:
        """Every node closed to new instances (durable)."""
        return sorted(self._drains)

    def node_state(self, node: str, runs_anything: bool) -> str | None:
        """``draining`` or ``drained`` (None: an open node)."""
        drain = self._drains.get(node)
        if drain is None:
            return None
        return "draining" if drain.held or runs_anything else "drained"

    def stuck(self, node: str) -> dict[str, str]:
        """Apps a draining node cannot shed (app → why)."""
        drain = self._drains.get(node)
        return dict(drain.stuck) if drain else {}

    # -- apps ------------------------------------------------------------------------------

    def forget(self, app: str) -> None:
        """An app's plan is gone."""
        self.counts.pop(app, None)
        self.want.pop(app, None)
        self.reason.pop(app, None)
        for drain in self._drains.values():
            drain.held.pop(app, None)
            drain.stuck.pop(app, None)

    def adopt(self, node: str, running: Mapping[str, int]) -> None:
        """A node runs these counts already (an agent's re-sync): keep them where they are."""
        for app, n in running.items():
            drain = self._drains.get(node)
            if drain is not None:
                drain.held[app] = max(drain.held.get(app, 0), n)
            else:
                self.counts.setdefault(app, {})[node] = n

    def take_over(self, published: Mapping[str, Mapping[str, int]]) -> None:
        """Become the placer of a mesh: what the previous placer published runs, so it stays
        where it is (a drained node's share is what it still holds until its replacements are
        Ready)."""
        self.counts = {}
        for app, row in published.items():
            for node, n in row.items():
                drain = self._drains.get(node)
                if drain is not None:
                    drain.held[app] = n
                elif n:
                    self.counts.setdefault(app, {})[node] = n

    def follow(self, published: Mapping[str, Mapping[str, int]]) -> None:
        """Take another member's placement as it is (a member that does not place): a drained
        node holds exactly what the placer still gives it."""
        for drain in self._drains.values():
            drain.held.clear()
            drain.stuck.clear()
        self.take_over(published)

    def reserved(self, node: str, budgets: Mapping[str, Budget]) -> tuple[float, int]:
        """The cpu and mem the apps placed on ``node`` reserve (held drain instances too)."""
        cpu, mem = 0.0, 0
        held = self._drains[node].held if node in self._drains else {}
        for app, by_node in self.counts.items():
            n = by_node.get(node, 0) + held.get(app, 0)
            budget = budgets.get(app)
            if n and budget is not None:
                cpu, mem = cpu + n * budget.cpu, mem + n * budget.mem
        return cpu, mem

    def assign(self, plans: Mapping[str, Plan], budgets: Mapping[str, Budget],
               nodes: Iterable[str], ready: Mapping[str, int]) -> dict[str, dict[str, int]]:
        """Re-place every app; node → count per app, what each agent must run.

        Args:
            plans: Every plan.
            budgets: Every budget (an app without one is not placed yet).
            nodes: This fabric's nodes, in order.
            ready: Ready instances of each app's current digest on open nodes.
        """
        order = list(nodes)
        # What each node's apps reserve, summed again only once a count on that node moved:
        # one sum per node and pass instead of one per app and node (a pass over 100 apps
        # summed 30,000 reservations, and a mass deploy runs a pass per deploy). Each sum is
        # the one :meth:`reserved` makes, so the rooms are exactly those it would give.
        used: dict[str, tuple[float, int]] = {}
        for app in sorted(plans, key=lambda a: (plans[a].published_at, a)):
            budget = budgets.get(app)
            if budget is None:
                continue
            current = self.counts.get(app, {})
            rooms = []
            for node in order:
                if node not in self.capacity:
                    continue
                cpu, mem = self.capacity[node]
                mine = current.get(node, 0)
                if node not in used:
                    used[node] = self.reserved(node, budgets)
                used_cpu, used_mem = used[node]
                rooms.append(NodeRoom(node, cpu - used_cpu + mine * budget.cpu,
                                      mem - used_mem + mine * budget.mem,
                                      node not in self._drains))
            want = self.want.get(app, 0)
            placed = place(rooms, want, current, budget.cpu, budget.mem)
            for node in {*current, *placed}:
                if current.get(node, 0) != placed.get(node, 0):
                    used.pop(node, None)
            self.counts[app] = placed
            for node in self._settle_drains(app, want, ready.get(app, 0)):
                used.pop(node, None)
        out: dict[str, dict[str, int]] = {}
        for app, by_node in self.counts.items():
            row = {n: c for n, c in by_node.items() if c}
            for node, drain in self._drains.items():
                if drain.held.get(app):
                    row[node] = drain.held[app]
            out[app] = row
        return out

    def _settle_drains(self, app: str, want: int, ready: int) -> list[str]:
        """Let a draining node's instances of ``app`` go once their replacements are Ready;
        the nodes that let them go."""
        released: list[str] = []
        placed = sum(self.counts[app].values())
        for node, drain in self._drains.items():
            held = drain.held.get(app, 0)
            if not held:
                continue
            if placed < want:
                drain.stuck[app] = (f"{app}: {held} instance(s) on {node} have nowhere to go "
                                    f"(room for {placed} of {want} elsewhere)")
                continue
            drain.stuck.pop(app, None)
            if ready >= want:
                del drain.held[app]
                released.append(node)
        return released
