"""What the fabric remembers between two judgements of a canary (the judging is pure).

The edge reports its per-digest answer counts (:class:`~mycelium.messages.EdgeAnswers`) every
second; the fabric ticks every second and asks :meth:`CanaryWatch.verdicts` for each app in its
canary phase. The watch only keeps facts — the latest counts, when all canaries were first
Ready, whether one left Ready since — and hands them to :func:`~mycelium.fabric.canary.judge`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mycelium.messages import InstanceInfo, Plan
from mycelium.rollout_messages import EdgeAnswers
from mycelium.states import InstanceState

from .canary import Rates, Verdict, canary_doc, judge

__all__ = ["CanaryWatch"]


class CanaryWatch:
    """Facts about running canaries, by app (lives in the fabric's mailbox thread)."""

    def __init__(self) -> None:
        self._rates: dict[tuple[str, str], Rates] = {}
        self._ready_since: dict[tuple[str, int], float] = {}
        self._lost: set[tuple[str, int]] = set()

    def answers(self, message: EdgeAnswers) -> None:
        """Keep the edge's latest counts (each replaces the previous one of its digest)."""
        for c in message.counts:
            self._rates[(c.app, c.digest)] = Rates(c.answered, c.errors)

    def rates(self, app: str, digest: str | None) -> Rates:
        """The latest counts of one digest of an app (none yet: zero)."""
        return self._rates.get((app, digest or ""), Rates())

    def verdicts(self, plans: Mapping[str, Plan], instances: Iterable[InstanceInfo],
                 now: float) -> list[tuple[Plan, Verdict]]:
        """Judge every app in its canary phase; forget what belongs to no canary any more."""
        everything = list(instances)
        out: list[tuple[Plan, Verdict]] = []
        live: set[tuple[str, int]] = set()
        for plan in plans.values():
            if not plan.canary_nodes:
                continue
            key = (plan.app, plan.generation)
            live.add(key)
            ready = {i.node for i in everything if i.app == plan.app and i.digest == plan.digest
                     and i.state == InstanceState.READY and i.serving}  # its checks pass
            if set(plan.canary_nodes) <= ready:
                self._ready_since.setdefault(key, now)
            elif key in self._ready_since:
                self._lost.add(key)
            out.append((plan, judge(plan, self.rates(plan.app, plan.digest),
                                    self.rates(plan.app, plan.previous),
                                    self._ready_since.get(key), key in self._lost, now)))
        for gone in [k for k in self._ready_since if k not in live]:
            del self._ready_since[gone]
        self._lost &= live
        apps = {app for app, _g in live}
        for old in [k for k in self._rates if k[0] not in apps]:
            del self._rates[old]
        return out

    def doc(self, plan: Plan, instances: Iterable[InstanceInfo]) -> dict[str, object]:
        """The app's ``canary`` object in ``status --json``."""
        return canary_doc(plan, instances, self.rates(plan.app, plan.digest),
                          self.rates(plan.app, plan.previous))
