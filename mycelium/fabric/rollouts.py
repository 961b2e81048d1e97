"""The fabric's deployment bookkeeping: history, canary phase, promote and rollback.

A collaborator of :class:`~mycelium.fabric.fabric.Fabric` (it owns no actor): the fabric calls
it when a plan is published, fails or is removed, and asks it what a ``promote``, a ``rollback``
or a canary's verdict means as a plan. The decisions are the pure functions of
:mod:`.history` and :mod:`.canary`; this class only keeps the history log and the canary watch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mycelium._logger import get_logger
from mycelium.messages import InstanceInfo, Plan, PublishPlan, RolloutFailed, Tick, to_wire
from mycelium.rollout_messages import EdgeAnswers, GetHistory, Promote, Rollback
from mycelium.states import PlanStatus
from supervisors.timers import shared_timers

from . import canary, history
from .canary import pick_canary_nodes
from .canary_watch import CanaryWatch
from .errors import BadPlan
from .history_store import HistoryLog, MemoryHistory

__all__ = ["MESSAGES", "RolloutPort", "Rollouts", "reverted"]

log = get_logger(__name__)

MESSAGES = (Promote, Rollback, GetHistory, EdgeAnswers, Tick)
"""What the fabric hands to :meth:`Rollouts.handle` (``Tick`` only of kind ``canary``)."""


@dataclass(frozen=True, slots=True)
class RolloutPort:
    """What the fabric lends its rollouts: its plans and instances, and how to change a plan.

    ``publish`` publishes as a deploy would; ``replace`` saves and applies a plan of the same
    generation; ``fail`` rolls a plan back as a failed rollout; ``tell`` tells the fabric.
    """

    plans: Callable[[], Mapping[str, Plan]]
    instances: Callable[[], list[InstanceInfo]]
    publish: Callable[[PublishPlan], Plan]
    replace: Callable[[Plan], Plan]
    fail: Callable[[RolloutFailed], None]
    tell: Callable[[Any], None]


def reverted(plan: Plan, reason: str, generation: int, now: float) -> Plan:
    """The plan a failed rollout of ``plan`` leaves: its previous digest, ``failed`` (pure).

    With no previous digest the plan stays but is marked failed; either way a canary ends.
    """
    if plan.previous:  # the same digest: a secrets change, back to the previous count
        back = plan.secrets - 1 if plan.previous == plan.digest else plan.secrets
        return dataclasses.replace(plan, digest=plan.previous, previous=None,
                                   status=PlanStatus.FAILED, reason=reason,
                                   secrets=max(back, 0), generation=generation,
                                   published_at=now, canary_nodes=())
    return dataclasses.replace(plan, status=PlanStatus.FAILED, reason=reason,
                               generation=generation, canary_nodes=())



def with_next_secrets(plan: Plan, generation: int, now: float) -> Plan:
    """The same digest with the next secrets count: a blue/green rollout onto new values (pure).

    ``previous`` is the same digest, so a failed rollout goes back to the previous count's
    instances, which still run (:func:`reverted`).
    """
    return dataclasses.replace(plan, secrets=plan.secrets + 1, generation=generation,
                               published_at=now, status=PlanStatus.ACTIVE, reason=None,
                               previous=plan.digest)


class Rollouts:
    """History and canaries of every app of one fabric.

    Args:
        log_factory: Opens the durable history (called on each fabric start).
        keep: Deployments kept per app (``[rollout] history_keep``).
    """

    def __init__(self, log_factory: Callable[[], HistoryLog] | None = None,
                 keep: int = history.DEFAULT_KEEP) -> None:
        self._factory = log_factory or MemoryHistory
        self._log: HistoryLog | None = None
        self._keep = keep
        self.watch = CanaryWatch()
        self._port: RolloutPort | None = None
        self._ticking = False

    def open(self, port: RolloutPort) -> None:
        """Open the history log and start judging canaries (the fabric's ``on_start``)."""
        self._log = self._factory()
        self._port = port
        self._ticking = False
        self.schedule()

    def handle(self, message: Any) -> Any:
        """Answer one of :data:`MESSAGES` (in the fabric's mailbox).

        Raises:
            BadPlan: a promote without a canary, a rollback to an unknown deployment.
            NothingToRollBack: nothing to roll back to.
        """
        port = self._port
        assert port is not None
        match message:
            case Promote(app=app):
                return to_wire(port.replace(self.promoted(port.plans().get(app), app)))
            case Rollback(app=app, to=to, who=who):
                return to_wire(port.publish(self.rollback(app, to, who, port.plans().get(app))))
            case GetHistory(app=app):
                return self.history(app)
            case EdgeAnswers():  # judged at once: a bad canary leaves within a second
                self.answers(message)
                self._judge(port)
            case Tick(kind="canary"):
                self._ticking = False
                self._judge(port)
                self.schedule()
        return None

    def schedule(self) -> None:
        """Judge the running canaries in a second (no timer while none runs)."""
        port = self._port
        if port is not None and not self._ticking and any(
                p.canary_nodes for p in port.plans().values()):
            self._ticking = True
            shared_timers().call_later(1.0, lambda: port.tell(Tick("canary")))

    def _judge(self, port: RolloutPort) -> None:
        for plan, verdict in self.watch.verdicts(port.plans(), port.instances(), time.time()):
            match verdict:
                case canary.Revert(reason=reason):
                    log.warning("fabric: canary of %s %s reverted: %s", plan.app,
                                plan.digest[:12], reason)
                    port.fail(RolloutFailed(plan.app, plan.digest, "", reason))
                case canary.Promote():
                    log.info("fabric: canary of %s %s promoted itself", plan.app,
                             plan.digest[:12])
                    port.replace(self.promoted(plan, plan.app))

    def decorate(self, doc: dict[str, Any], plans: Mapping[str, Plan],
                 instances: list[InstanceInfo]) -> None:
        """Add the ``canary`` object to each app of a status document that runs one."""
        for entry in doc["apps"]:
            plan = plans.get(entry["app"])
            if plan is not None and plan.canary_nodes:
                entry["canary"] = self.watch.doc(plan, instances)

    def close(self) -> None:
        """Close the history log (idempotent)."""
        self._port = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _update(self, app: str, change: Callable[[list[history.Deployment]],
                                                 list[history.Deployment]]) -> None:
        if self._log is None:
            return
        before = self._log.load(app)
        after = change(before)
        if after != before:
            self._log.save(app, after)

    # -- plans -----------------------------------------------------------------------------

    def shape(self, msg: PublishPlan, plan: Plan, old: Plan | None,
              instances: Iterable[InstanceInfo]) -> Plan:
        """The plan to publish with its canary phase, if ``msg`` asks for one.

        Raises:
            BadPlan: a bad canary: no old digest running, too few nodes, a weight outside
                1 to 99.
        """
        if msg.canary == 0 and not msg.canary_weight and not msg.auto_promote:
            return plan
        if not 0 <= msg.canary_weight <= 99 or (msg.canary == 0 and msg.canary_weight):
            raise BadPlan(f"--canary-weight must be 1 to 99, not {msg.canary_weight}")
        if msg.auto_promote < 0:
            raise BadPlan(f"--auto-promote must be positive, not {msg.auto_promote:g}")
        running = None if old is None or old.digest == msg.digest else old.digest
        nodes = pick_canary_nodes(msg.canary, msg.app, running, instances)
        return dataclasses.replace(plan, canary_nodes=nodes, canary_weight=msg.canary_weight,
                                   auto_promote=float(msg.auto_promote))

    def published(self, plan: Plan, who: str, version: str) -> None:
        """Record a new deployment (the current one is superseded)."""
        self._update(plan.app, lambda rs: history.published(rs, plan, who, version,
                                                            self._keep))

    def failed(self, plan: Plan, reason: str) -> None:
        """Record that ``plan``'s rollout failed (a canary: rolled back)."""
        self._update(plan.app, lambda rs: history.failed(
            rs, plan.digest, reason, bool(plan.canary_nodes), plan.previous))

    def stopped(self, app: str) -> None:
        """Record that the app was stopped."""
        self._update(app, history.stopped)

    def promoted(self, plan: Plan | None, app: str) -> Plan:
        """The plan that continues a canary as the blue/green rollout of the same generation.

        Raises:
            BadPlan: the app runs no canary (exit 2).
        """
        if plan is None or not plan.canary_nodes:
            raise BadPlan(f"{app} runs no canary: nothing to promote")
        return dataclasses.replace(plan, canary_nodes=())

    def rollback(self, app: str, to: str, who: str, plan: Plan | None) -> PublishPlan:
        """The publish that deploys an earlier deployment again, as a new generation.

        Raises:
            BadPlan: no plan for the app, or ``to`` names no deployment (exit 2).
            NothingToRollBack: no earlier deployment ran successfully (exit 1).
        """
        if plan is None:
            raise BadPlan(f"no plan for app {app!r}")
        records = self._log.load(app) if self._log is not None else []
        target = history.rollback_target(records, to, plan.digest)
        return PublishPlan(app=app, digest=target.digest, min=plan.min, max=plan.max,
                           warmup=plan.warmup, timeout=plan.timeout, who=who,
                           version=target.version)

    def history(self, app: str) -> list[dict[str, Any]]:
        """``mycelium history --json`` of the app."""
        return history.history_doc(self._log.load(app) if self._log is not None else [])

    # -- canaries --------------------------------------------------------------------------

    def answers(self, message: EdgeAnswers) -> None:
        """The edge's latest per-digest counts."""
        self.watch.answers(message)
