"""How many instances each app wants now, and where they go: the fabric's scaling collaborator.

The fabric hands it what the edge and the agents report (:class:`~mycelium.messages.EdgeLoad`,
:class:`~mycelium.messages.WakeApp`, :class:`~mycelium.messages.NodeCapacity`, drains) and asks
it for the counts each node must run. The decisions are the pure functions of
:mod:`.scaling`; this class only remembers their inputs between two calls:

- a fixed app wants ``min(max, max_instances)``;
- an app with ``--min 0`` wants nothing until a request arrives (the edge holds it and sends
  :class:`WakeApp`): then ONE instance, and its full count once that one is Ready; ``idle``
  seconds after the last request it wants nothing again;
- an autoscaled app (``--target-concurrency``) wants :func:`~.scaling.autoscale`'s count.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from mycelium.messages import AppLoad, Budget, InstanceInfo, Plan
from mycelium.states import InstanceState

from .placer import Placer
from .scaling import SCALE_DOWN_AFTER, ScaleState, autoscale

__all__ = ["DrainBook", "FileDrains", "MemoryDrains", "Scaler"]

IDLE_DEFAULT = 300.0
"""Seconds without a request before a ``--min 0`` app with no ``--idle`` stops its last
instance."""


class DrainBook(Protocol):
    """Where the drained nodes are kept (durable like plans)."""

    def load(self) -> list[str]:
        """The nodes drained before."""
        ...

    def save(self, nodes: list[str]) -> None:
        """Replace the drained nodes."""
        ...


class MemoryDrains:
    """Drains kept for the life of the process only (tests, and a member without a file)."""

    def __init__(self) -> None:
        self.nodes: list[str] = []

    def load(self) -> list[str]:
        """What was saved."""
        return list(self.nodes)

    def save(self, nodes: list[str]) -> None:
        """Keep it in memory."""
        self.nodes = list(nodes)


class FileDrains:
    """Drains in a small JSON file beside the fabric's store, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[str]:
        """The file's nodes ([] if it is missing or unreadable)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [str(n) for n in data.get("drained", [])] if isinstance(data, dict) else []

    def save(self, nodes: list[str]) -> None:
        """Write a temp file, fsync, rename."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"drained": nodes}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


ScaleEvent = Callable[[str, str], None]
"""Told (app, sentence) whenever an app's desired count changes."""


class Scaler:
    """The wants of every app and the placement book (see the module docstring).

    Args:
        drains: Where drained nodes are kept.
        on_scale: Told each scale event (the supervision log).
    """

    def __init__(self, drains: DrainBook, on_scale: ScaleEvent | None = None,
                 down_after: float = SCALE_DOWN_AFTER) -> None:
        self._drains = drains
        self._down_after = down_after
        self.placer = Placer(drains.load())
        self._on_scale = on_scale or (lambda _app, _why: None)
        self._auto: dict[str, ScaleState] = {}
        self._in_flight: dict[str, float] = {}
        self._last_request: dict[str, float] = {}
        self._awake: dict[str, float] = {}  # min-0 app → when it woke

    # -- inputs ----------------------------------------------------------------------------

    def load(self, loads: Iterable[AppLoad], now: float) -> None:
        """The edge's report: in-flight means and request arrivals."""
        for load in loads:
            self._in_flight[load.app] = load.in_flight
            if load.requests or load.in_flight > 0:
                self._last_request[load.app] = now

    def wake(self, app: str, plan: Plan | None, now: float) -> bool:
        """A request waits for an app with no instance; whether that woke it."""
        if plan is None:
            return False
        self._last_request[app] = now
        if plan.min > 0 or app in self._awake:
            return False
        self._awake[app] = now
        return True

    def drain(self, node: str, undrain: bool) -> bool:
        """Close or open a node; whether that changed anything (saved durably if so)."""
        changed = self.placer.undrain(node) if undrain else self.placer.drain(node)
        if changed:
            self._drains.save(self.placer.drained_nodes())
        return changed

    def adopt(self, app: str, plan: Plan | None, desired: int, now: float) -> None:
        """Carry on another fabric's decision for ``app`` (this one places from now on): an
        awake app stays awake, an autoscaled one starts from its count."""
        if plan is None:
            return
        self.placer.want[app] = desired
        if plan.min == 0 and desired > 0:
            self._awake.setdefault(app, now)
            self._last_request.setdefault(app, now)
        if plan.target_concurrency is not None and desired > 0:
            self._auto[app] = ScaleState(desired)

    def forget(self, app: str) -> None:
        """The app's plan is gone."""
        self.placer.forget(app)
        for book in (self._auto, self._in_flight, self._last_request, self._awake):
            book.pop(app, None)

    # -- decisions -------------------------------------------------------------------------

    def update(self, plans: Mapping[str, Plan], budgets: Mapping[str, Budget],
               ready: Mapping[str, int], now: float) -> bool:
        """Recompute every app's want; whether one changed."""
        changed = False
        for app, plan in plans.items():
            want, reason = self._want(app, plan, budgets.get(app), ready.get(app, 0), now)
            if want != self.placer.want.get(app):
                if app in self.placer.want:
                    self._on_scale(app, f"desired {self.placer.want[app]} → {want}: {reason}")
                self.placer.want[app] = want
                changed = True
            self.placer.reason[app] = reason
        return changed

    def _want(self, app: str, plan: Plan, budget: Budget | None, ready: int,
              now: float) -> tuple[int, str]:
        limit = plan.max if budget is None else min(plan.max, budget.max_instances)
        low = plan.min
        if plan.min == 0:
            idle = plan.idle if plan.idle is not None else IDLE_DEFAULT
            woke = self._awake.get(app)
            last = self._last_request.get(app, woke or 0.0)
            if woke is not None and now - last >= idle and self._in_flight.get(app, 0.0) <= 0:
                del self._awake[app]
                self._auto.pop(app, None)
                woke = None
            if woke is None:
                return 0, f"idle: no request for {idle:g}s (scaled to zero)"
            low = 1
            if ready == 0:
                return 1, "waking: one instance starts for the held requests"
        if plan.target_concurrency is None:
            return limit, f"fixed: min(max {plan.max}, max_instances {limit})"
        state, reason = autoscale(self._auto.get(app, ScaleState(max(low, 1))),
                                  self._in_flight.get(app, 0.0), now, low=low, high=limit,
                                  target=plan.target_concurrency, down_after=self._down_after)
        self._auto[app] = state
        return state.desired, reason

    def idle(self, app: str, plan: Plan | None) -> bool:
        """Whether a ``--min 0`` app is scaled to zero now."""
        return plan is not None and plan.min == 0 and app not in self._awake

    def assign(self, plans: Mapping[str, Plan], budgets: Mapping[str, Budget],
               nodes: Iterable[str],
               instances: Iterable[InstanceInfo]) -> dict[str, dict[str, int]]:
        """app → node → count for this fabric's nodes (see :meth:`Placer.assign`)."""
        drained = set(self.placer.drained_nodes())
        ready: dict[str, int] = {}
        for info in instances:
            plan = plans.get(info.app)
            if (plan is not None and info.state == InstanceState.READY
                    and info.digest == plan.digest and info.node not in drained):
                ready[info.app] = ready.get(info.app, 0) + 1
        return self.placer.assign(plans, budgets, nodes, ready)

    def ready_counts(self, plans: Mapping[str, Plan],
                     instances: Iterable[InstanceInfo]) -> dict[str, int]:
        """Ready instances of each app's current digest, anywhere."""
        out: dict[str, int] = {}
        for info in instances:
            plan = plans.get(info.app)
            if plan is not None and info.state == InstanceState.READY \
                    and info.digest == plan.digest:
                out[info.app] = out.get(info.app, 0) + 1
        return out

    # -- views -----------------------------------------------------------------------------

    def node_doc(self, node: str, budgets: Mapping[str, Budget], runs_anything: bool,
                 running: Mapping[str, int] | None = None) -> dict[str, Any]:
        """A node's status additions: capacity, reservations, drain state.

        ``running`` (app → live instances on the node) counts the reservations where the
        fabric does not place itself (one instance per node per member); else the placement.
        """
        doc: dict[str, Any] = {}
        cap = self.placer.capacity.get(node)
        if cap is not None:
            if running is None:
                cpu, mem = self.placer.reserved(node, budgets)
            else:
                cpu = sum(n * budgets[a].cpu for a, n in running.items() if a in budgets)
                mem = sum(n * budgets[a].mem for a, n in running.items() if a in budgets)
            doc["cpu"] = {"capacity": cap[0], "reserved": round(cpu, 6),
                          "free": round(max(0.0, cap[0] - cpu), 6)}
            doc["mem_mb"] = {"capacity": cap[1], "reserved": mem,
                             "free": max(0, cap[1] - mem)}
        state = self.placer.node_state(node, runs_anything)
        if state is not None:
            doc["state"] = state
            stuck = self.placer.stuck(node)
            if stuck:
                doc["stuck"] = sorted(stuck.values())
        return doc

    def app_doc(self, app: str, plan: Plan | None) -> dict[str, Any]:
        """An app's status additions: ``desired``, ``desired_reason``, scale settings."""
        doc: dict[str, Any] = {}
        if app in self.placer.want:
            doc["desired"] = self.placer.want[app]
            doc["desired_reason"] = self.placer.reason.get(app, "")
        if plan is not None:
            with contextlib.suppress(KeyError):
                doc["in_flight"] = round(self._in_flight[app], 3)
            if plan.idle is not None or plan.min == 0:
                doc["idle"] = plan.idle if plan.idle is not None else IDLE_DEFAULT
            if plan.target_concurrency is not None:
                doc["target_concurrency"] = plan.target_concurrency
        return doc
