"""``mycelium deploy``: check the input, publish the plan, follow the rollout.

Standard library only, shared by the Typer command and the fast path (:mod:`.fast`): each
passes how to make its request function (over the control socket, with orjson or json).
:func:`judge` and :func:`progress` are also what ``mycelium apply`` follows its rollouts with.
"""

from __future__ import annotations

import time

from mycelium.defaults import DeployDefaults
from mycelium.errors import OperationFailed
from mycelium.states import InstanceState, PlanStatus

from .lines import err, out

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on every CLI start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Request = Callable[..., Any]

__all__ = ["Judged", "app_doc", "deploy_app", "follow_canary", "judge", "progress", "who"]

_PHASES = ("launching", "healthy", "warming", "draining", "done")


def deploy_app(connect: Callable[[], Request], app_name: str, digest: str, *, n_min: int,
               n_max: int, max_instances: int | None, cpu: float, mem: int,
               warmup: float | None, wait: bool, timeout: float | None,
               canary: int | None = None, canary_weight: int | None = None,
               auto_promote: float | None = None, hosts: list[str] | None = None,
               idle: float | None = None, target_concurrency: float | None = None) -> None:
    """Check, publish, and (with ``wait``) follow until min Ready and no old digest is left.

    ``connect()`` is called once the input is known good, so that bad input is reported
    before a bad home or a missing mesh, whichever path runs. ``timeout`` None (no
    ``--timeout``) lets the mesh apply its ``[rollout] timeout``; the wait then follows the
    deadline the published plan carries. ``hosts`` None keeps the app's host names; a list
    replaces them (``[""]`` clears them).

    Raises:
        BadPlan: bad numbers or names (exit 2), whether or not a mesh runs.
        OperationFailed: rolled back, superseded, stopped or timed out.
    """
    from mycelium.fabric.validate import (
        check_app_name,
        check_budget_fields,
        check_plan_fields,
        check_scale_fields,
        host_names,
    )

    # bad numbers and names are bad input (exit 2) whether or not a mesh runs; the mesh checks
    # again, with the digest and the spore's manifest
    check_app_name(app_name)
    check_plan_fields(app_name, "0" * 64, n_min, n_max, 0.0 if warmup is None else warmup,
                      DeployDefaults.TIMEOUT if timeout is None else timeout)
    check_budget_fields(app_name, n_max if max_instances is None else max_instances, cpu, mem)
    canaried = {}
    if canary is not None or canary_weight is not None or auto_promote is not None:
        from mycelium.mesh.rollout_ops import canary_fields

        canaried = {"canary": canary, "canary_weight": canary_weight,
                    "auto_promote": auto_promote}
        canary_fields(canaried)  # bad input before any connection
    names = None if hosts is None else list(host_names(hosts))
    check_scale_fields(n_min, idle, target_concurrency)
    scale = {k: v for k, v in (("idle", idle), ("target_concurrency", target_concurrency))
             if v is not None}
    request = connect()
    started = time.monotonic()
    plan = request("deploy", app=app_name, digest=digest, min=n_min, max=n_max,
                   max_instances=max_instances, cpu=cpu, mem=mem, warmup=warmup,
                   rollout_timeout=timeout, who=who(), **canaried, **scale,
                   **({} if names is None else {"hosts": names}))
    full, generation = plan["digest"], plan["generation"]
    timeout = float(plan["timeout"])  # the mesh's, when --timeout was not given
    if not wait:
        out(f"deploying {app_name} {full[:12]} (generation {generation}, not waiting)")
        return
    if plan.get("canary_nodes"):
        follow_canary(request, app_name, full, generation, started + timeout + 5.0)
        return
    deadline = started + timeout + 5.0  # the mesh enforces --timeout; this only bounds the wait
    last = ""
    phases: dict[str, int] = {}
    while True:
        doc = app_doc(request("status", app=app_name), app_name)
        if doc is not None:
            progress(app_name, full, doc, phases)
        view = judge(doc, full, generation)
        line = f"{app_name}: {view.ready}/{view.desired} Ready ({view.state})"
        if doc is not None and line != last:
            err(line)
            last = line
        if view.outcome == "stopped":
            raise OperationFailed(f"deploy of {app_name} failed: the app was stopped")
        if view.outcome == "rolled back":
            raise OperationFailed(f"deploy of {app_name} {full[:12]} rolled back: "
                                  f"{view.detail}")
        if view.outcome == "superseded":
            raise OperationFailed(f"deploy of {app_name} {full[:12]} superseded by "
                                  f"{view.detail[:12]}")
        if view.outcome == "done":
            took = time.monotonic() - started
            out(f"deployed {app_name} {full[:12]}: {view.ready}/{view.desired} Ready "
                 f"in {took:.2f}s")
            return
        if time.monotonic() > deadline:
            raise OperationFailed(f"deploy of {app_name} {full[:12]} timed out after "
                                  f"{timeout:g}s: {view.ready}/{view.min} Ready ({view.state})")
        time.sleep(0.02)


def who() -> str:
    """``user@host`` for the deployment history."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def follow_canary(request: Request, app_name: str, full: str, generation: int,
                  deadline: float) -> None:
    """``deploy --canary … --wait``: return once every canary is Ready.

    Raises:
        OperationFailed: the canary was rolled back, superseded, or not Ready in time.
    """
    while True:
        doc = app_doc(request("status", app=app_name), app_name)
        view = judge(doc, full, generation)
        if view.outcome in ("rolled back", "superseded", "stopped"):
            raise OperationFailed(f"canary of {app_name} {full[:12]} {view.outcome}"
                                  + (f": {view.detail}" if view.detail else ""))
        canary = (doc or {}).get("canary")
        if canary is not None and canary["ready"] >= canary["count"]:
            out(f"canary of {app_name} {full[:12]}: {canary['ready']}/{canary['count']} Ready, "
                f"{canary['weight']:g}% of requests (mycelium promote {app_name} continues)")
            return
        if canary is None and view.outcome == "done":  # promoted meanwhile, and done
            out(f"deployed {app_name} {full[:12]}: {view.ready}/{view.desired} Ready")
            return
        if time.monotonic() > deadline:
            raise OperationFailed(f"canary of {app_name} {full[:12]} not Ready in time")
        time.sleep(0.02)


class Judged:
    """Where one app's rollout stands, judged from its status document (see :func:`judge`).

    ``outcome`` is ``waiting``, ``done`` (``min`` instances of the digest Ready and no other
    digest left), ``rolled back`` (``detail``: the reason), ``superseded`` (``detail``: the
    digest now planned) or ``stopped`` (the app has no plan any more).
    """

    __slots__ = ("desired", "detail", "min", "outcome", "ready", "state")

    def __init__(self, outcome: str, ready: int = 0, desired: int = 0, n_min: int = 0,
                 state: str = "stopped", detail: str = "") -> None:
        self.outcome = outcome
        self.ready = ready
        self.desired = desired
        self.min = n_min
        self.state = state
        self.detail = detail


def judge(doc: dict[str, Any] | None, full: str, generation: int) -> Judged:
    """Judge the rollout of digest ``full`` published as ``generation`` (pure).

    Shared by ``deploy --wait`` and ``apply``, which follows many apps with one status poll.
    """
    if doc is None:
        return Judged("stopped")
    insts = [i for i in doc["instances"] if i["state"] != InstanceState.STOPPED]
    ready = sum(1 for i in insts if i["digest"] == full and i["state"] == InstanceState.READY)
    old = [i for i in insts if i["digest"] != full]
    facts = (ready, doc["desired"], doc["min"], doc["state"])
    if doc.get("generation", 0) > generation and doc.get("plan_status") == PlanStatus.FAILED:
        return Judged("rolled back", *facts, detail=str(doc.get("reason")))
    if doc["digest"] != full:
        return Judged("superseded", *facts, detail=str(doc["digest"]))
    if ready >= max(doc["min"], 1 if doc["desired"] else 0) and not old:
        return Judged("done", *facts)
    return Judged("waiting", *facts)


def _node_phase(full: str, insts: list[dict[str, Any]], had_blue: bool) -> int:
    greens = [i for i in insts if i["digest"] == full]
    blues = [i for i in insts if i["digest"] != full]
    if not greens:
        return -1
    if not any(g["state"] == InstanceState.READY for g in greens):
        return 0
    if not blues:
        return 4
    if any(b["state"] in (InstanceState.DRAINING, InstanceState.STOPPED) for b in blues):
        return 3
    return 2 if had_blue else 1


def progress(app_name: str, full: str, doc: dict[str, Any], seen: dict[str, int],
             emit: Callable[[str], None] = err) -> None:
    """Per node, each phase of the update once and in order, to ``emit`` (stderr by default).

    Status is polled, so a phase shorter than a poll may be noticed only by its successor; it
    still happened (a node cannot drain before its green was healthy), so it is printed too.
    """
    by_node: dict[str, list[dict[str, Any]]] = {}
    for i in doc["instances"]:
        if i["state"] == InstanceState.STOPPED:
            continue
        by_node.setdefault(i["node"], []).append(i)
    moves: list[tuple[int, str, list[str]]] = []
    for node, here in sorted(by_node.items()):
        had_blue = any(i["digest"] != full for i in here) or seen.get(node + "/blue", 0) == 1
        if had_blue:
            seen[node + "/blue"] = 1
        phase, before = _node_phase(full, here, had_blue), seen.get(node, -1)
        lines = [f"{app_name} {node}: {_PHASES[k]}" for k in range(before + 1, phase + 1)
                 # a first start has no blue to warm beside or drain
                 if not (k in (2, 3) and not had_blue)]
        moves.append((phase, node, lines))
        seen[node] = max(before, phase)
    # Seen in the same poll, a node further along moved first (a node's blue drains before
    # the next node starts its green): print it first, so that the lines keep the real order.
    for _phase, _node, lines in sorted(moves, key=lambda move: (-move[0], move[1])):
        for line in lines:
            emit(line)


def app_doc(status: dict[str, Any], app_name: str) -> dict[str, Any] | None:
    """The app's document in a status reply, if it has a plan."""
    for doc in status["apps"]:
        if doc["app"] == app_name and doc["digest"] is not None:
            return dict(doc)
    return None
