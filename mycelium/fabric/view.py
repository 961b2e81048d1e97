"""Pure views of the fabric's state: the edge's routes and the ``status --json`` document."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from mycelium.messages import AppRoute, Budget, EndpointInfo, InstanceInfo, Plan
from mycelium.states import AppState, InstanceState, PlanStatus

__all__ = ["CRASHLOOP_RESTARTS", "app_state", "desired_count", "routes", "status_document"]

CRASHLOOP_RESTARTS = 3


def desired_count(plan: Plan, budget: Budget | None, nodes: int, declined: int) -> int:
    """``min(max, max_instances, nodes whose free capacity fits the budget)`` (deploy's rule)."""
    limit = plan.max if budget is None else min(plan.max, budget.max_instances)
    return max(0, min(limit, nodes - declined))


def routes(plans: Mapping[str, Plan], instances: Iterable[InstanceInfo]) -> tuple[AppRoute, ...]:
    """The routing table: every planned app with its Ready endpoints, sorted for stability.

    A Ready instance whose readiness check fails (``serving`` False) is left out: it keeps
    running and comes back once the check passes again.
    """
    by_app: dict[str, list[EndpointInfo]] = {app: [] for app in plans}
    for info in instances:
        if info.state == InstanceState.READY and info.serving and info.url and info.app in by_app:
            by_app[info.app].append(EndpointInfo(url=info.url, instance=info.id))
    return tuple(AppRoute(app=app, endpoints=tuple(sorted(eps, key=lambda e: e.instance)),
                          hosts=plans[app].hosts, hold=plans[app].min == 0)
                 for app, eps in sorted(by_app.items()))


def app_state(plan: Plan | None, desired: int, instances: list[InstanceInfo],
              now: float | None = None, restarting: int = 0) -> AppState:
    """One documented word for an app (docs/reference.md, ``status --json``).

    ``stopped`` no plan; ``failed`` the last update was rolled back; ``canary`` canaries of
    the new digest wait beside the old one for a promote; ``updating`` instances of
    another digest still run; ``running`` at least ``min`` and ``desired`` Ready; ``crashloop``
    below ``min`` while an instance keeps restarting (or waits out a backoff after its
    ``restarting``-th restart); ``starting`` below ``min`` within the rollout's deadline;
    ``degraded`` below ``min`` after it.
    """
    if plan is None:
        return AppState.STOPPED
    if plan.status == PlanStatus.FAILED:
        return AppState.FAILED
    if plan.canary_nodes:
        return AppState.CANARY
    live = [i for i in instances if i.state != InstanceState.STOPPED]
    if any(i.digest != plan.digest for i in live):
        return AppState.UPDATING
    ready = sum(1 for i in live if i.state == InstanceState.READY)
    if ready >= plan.min and ready >= desired:
        return AppState.RUNNING
    if restarting >= CRASHLOOP_RESTARTS or any(
            i.restarts >= CRASHLOOP_RESTARTS and i.state != InstanceState.READY for i in live):
        return AppState.CRASHLOOP
    if ready >= plan.min:
        return AppState.RUNNING
    now = time.time() if now is None else now
    if now - plan.published_at < plan.timeout:
        return AppState.STARTING
    return AppState.DEGRADED


def _instance_doc(info: InstanceInfo) -> dict[str, Any]:
    return {"id": info.id, "node": info.node, "child": info.child, "digest": info.digest,
            "state": info.state,
            "pid": info.pid, "url": info.url, "restarts": info.restarts,
            "started_at": info.started_at, "ready_at": info.ready_at,
            "cpu_percent": info.cpu_percent, "rss_bytes": info.rss_bytes,
            "reason": info.reason,
            "last_exit": None if info.last_exit is None else info.last_exit.to_doc(),
            "serving": info.state == InstanceState.READY and info.serving,
            "last_check": None if info.last_check is None else {
                "check": info.last_check.check, "ok": info.last_check.ok,
                "at": _rfc3339(info.last_check.at), "detail": info.last_check.detail},
            "status_text": info.status_text,
            "uid": info.uid, "limits": info.limits, "dir": info.dir}


def _rfc3339(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def status_document(plans: Mapping[str, Plan], budgets: Mapping[str, Budget],
                    instances: Iterable[InstanceInfo], nodes: Mapping[str, str],
                    declined: Mapping[str, set[str]], app: str | None = None,
                    restarting: Mapping[str, int] | None = None,
                    gone: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``status --json`` document (extra keys are additions, never changes).

    ``nodes`` are the live nodes (desired counts are computed over them), ``gone`` the ones
    listed too but not live (``lost``, ``down``: other members' nodes in etcd mode).
    ``restarting`` maps an app to the restart count of a slot whose instance failed and whose
    replacement is not Ready yet (it may be waiting out a backoff, so no instance shows it).
    """
    by_app: dict[str, list[InstanceInfo]] = {}
    for info in instances:
        by_app.setdefault(info.app, []).append(info)
    names = sorted(set(plans) | set(by_app))
    apps = []
    for name in names:
        if app is not None and name != app:
            continue
        plan = plans.get(name)
        insts = sorted(by_app.get(name, []), key=lambda i: (i.node, i.id))
        budget = budgets.get(name)
        desired = 0 if plan is None else desired_count(
            plan, budget, len(nodes), len(declined.get(name, ())))
        doc: dict[str, Any] = {
            "app": name,
            "digest": plan.digest if plan else None,
            "min": plan.min if plan else 0,
            "hosts": list(plan.hosts) if plan else [],
            "max": plan.max if plan else 0,
            "desired": desired,
            "ready": sum(1 for i in insts if i.state == InstanceState.READY
                         and (plan is None or i.digest == plan.digest)),
            "state": app_state(plan, desired, insts,
                               restarting=(restarting or {}).get(name, 0)),
            "instances": [_instance_doc(i) for i in insts],
        }
        if plan is not None:
            doc.update(generation=plan.generation, warmup=plan.warmup, timeout=plan.timeout,
                       previous=plan.previous, plan_status=plan.status, reason=plan.reason,
                       secrets=plan.secrets, env_secrets=list(plan.env_secrets))
        if budget is not None:
            doc["budget"] = {"max_instances": budget.max_instances, "cpu": budget.cpu,
                             "mem": budget.mem}
        apps.append(doc)
    every = {**nodes, **(gone or {})}
    return {"apps": apps,
            "nodes": [{"name": n, "state": s} for n, s in sorted(every.items())]}
