"""The control socket's operations on a running mesh: status, deploy, stop, tree, kill, down.

:class:`ControlOps` turns one decoded request into messages to the fabric (or signals to this
process's workloads) and its answer; :meth:`ControlOps.handlers` is the op-name table the
:class:`~mycelium.operator.control.ControlActor` serves. The REPL and the dashboard call the
same public methods in-process. The decisions (what a deploy request means with defaults filled
in, which pids a ``kill`` signals) are pure functions below, tested without a mesh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

import pykka

from mycelium.defaults import DeployDefaults
from mycelium.fabric import Names
from mycelium.fabric.errors import BadPlan
from mycelium.fabric.validate import check_app_name, check_budget, check_plan, host_names
from mycelium.messages import (
    GetInfo,
    GetStatus,
    KillEdgeWorker,
    PublishPlan,
    ReloadCerts,
    SetBudget,
    StopApp,
)
from mycelium.operator.control import ControlError
from mycelium.secrets import check_name
from mycelium.states import LIVE_STATES
from supervisors import describe_tree

from .backend import KillScope
from .rollout_ops import canary_fields, rollout_handlers
from .sporesource import SporeSource

__all__ = ["ControlOps", "annotate_tree", "deploy_plan", "kill_targets"]

Op = Callable[[dict[str, Any]], Any]
#: States in which an instance has a process worth signalling.
_RUNNING = LIVE_STATES


def deploy_plan(req: Mapping[str, Any], digest: str, manifest_warmup: float,
                rollout_timeout: float) -> PublishPlan:
    """The plan (budget inside) a ``deploy`` request means, every default filled in.

    Args:
        req: The request: ``app``, ``min``, ``max``, ``max_instances``, ``cpu``, ``mem``,
            ``warmup``, ``rollout_timeout``, ``env_secrets``; a missing or null field takes
            its default.
        digest: The resolved full digest.
        manifest_warmup: The spore's own ``warmup`` (the default of ``warmup``).
        rollout_timeout: The mesh's ``[rollout] timeout`` (the default of ``rollout_timeout``).

    Raises:
        BadPlan: a bad name or number, with the precise reason.
    """
    def given(key: str, default: Any) -> Any:
        value = req.get(key)
        return default if value is None else value

    app = check_app_name(req.get("app"))
    n_max = given("max", DeployDefaults.MAX)
    env_secrets = req.get("env_secrets") or []
    if not isinstance(env_secrets, list | tuple):
        raise BadPlan("env_secrets must be a list of secret names")
    names = tuple(dict.fromkeys(check_name(n) for n in env_secrets))
    plan = check_plan(PublishPlan(app=app, digest=digest, min=given("min", DeployDefaults.MIN),
                                  max=n_max, warmup=given("warmup", manifest_warmup),
                                  timeout=given("rollout_timeout", rollout_timeout),
                                  env_secrets=names,
                                  hosts=None if req.get("hosts") is None
                                  else host_names(req["hosts"]),
                                  idle=req.get("idle"),
                                  target_concurrency=req.get("target_concurrency")))
    budget = check_budget(SetBudget(app=app, max_instances=given("max_instances", n_max),
                                    cpu=given("cpu", DeployDefaults.CPU),
                                    mem=given("mem", DeployDefaults.MEM)))
    return dataclasses.replace(plan, budget=budget)


def kill_targets(status: Mapping[str, Any], app: str, node: str | None,
                 scope: KillScope) -> list[int]:
    """The pids ``kill APP [--node N]`` signals: running instances of ``app`` in ``scope``.

    Raises:
        ControlError: ``node`` is outside the scope (kill through the member that runs it), or
            no running instance is in it.
    """
    where = f" on this member ({scope.member})" if scope.member else ""
    if node is not None and scope.nodes is not None and node not in scope.nodes:
        raise ControlError(f"node {node} is not on this member ({scope.member}): run "
                           f"`mycelium kill` through the member that runs it", 1)
    pids = [inst["pid"] for doc in status["apps"] for inst in doc["instances"]
            if inst["pid"] and inst["state"] in _RUNNING
            and (inst["node"] == node if node is not None
                 else scope.nodes is None or inst["node"] in scope.nodes)]
    if not pids:
        raise ControlError(f"no running instance of {app}"
                           + (f" on {node}" if node else where), 1)
    return pids


class ControlOps:
    """The operations of one mesh.

    Args:
        names: The mesh's name registry (the fabric is found there on every call).
        spores: Where ``deploy`` resolves and verifies its digest.
        rollout_timeout: ``[rollout] timeout``: a deploy's health deadline when it names none.
        kill_scope: Which workloads ``kill`` may signal.
        root: The root supervisor, or None while the mesh is stopping (for ``tree``).
        request_stop: Asks the mesh to shut down (``down``).
    """

    def __init__(self, names: Names, spores: SporeSource, rollout_timeout: float,
                 kill_scope: KillScope, root: Callable[[], pykka.ActorRef[Any] | None],
                 request_stop: Callable[[], None]) -> None:
        self.names = names
        self.spores = spores
        self.rollout_timeout = rollout_timeout
        self.kill_scope = kill_scope
        self.root = root
        self.request_stop = request_stop
        #: this member's ``isolation`` section of the status document (set by the mesh)
        self.isolation: dict[str, Any] | None = None

    def handlers(self) -> dict[str, Op]:
        """Op name → handler of the decoded request, for the control socket."""
        return {"status": lambda req: self.status(req.get("app")), "deploy": self.deploy,
                "stop": lambda req: self.stop(req.get("app")), "tree": lambda _req: self.tree(),
                "kill": self.kill, "down": lambda _req: self.down(),
                "reload-certs": lambda _req: self.reload_certs(),
                **rollout_handlers(self.fabric)}

    def fabric(self) -> pykka.ActorRef[Any]:
        """The fabric's current ref.

        Raises:
            ControlError: it is between two lives.
        """
        ref = self.names.get("fabric")
        if ref is None:
            raise ControlError("the fabric is restarting; try again", 1)
        return ref

    def status(self, app: str | None = None) -> dict[str, Any]:
        """The status document (``mycelium status --json``), optionally for one app."""
        result = self.fabric().ask(GetStatus(app), timeout=10.0)
        assert isinstance(result, dict)
        if self.isolation is not None:
            result = {**result, "isolation": self.isolation}
        return result

    def deploy(self, req: dict[str, Any]) -> Any:
        """Set the budget and publish the plan in one message; the published plan.

        Raises:
            BadPlan: bad input, or the spore is another app's.
            SporeError: the digest is unknown, tampered with or untrusted.
        """
        app = check_app_name(req.get("app"))
        canary = canary_fields(req)
        digest = self.spores.resolve(str(req.get("digest", "")))
        manifest = self.spores.manifest(digest)
        if manifest.name != app:
            raise BadPlan(f"spore {digest[:12]} is app {manifest.name!r}, not {app!r}")
        plan = dataclasses.replace(deploy_plan(req, digest, manifest.warmup, self.rollout_timeout),
                                   **canary, who=str(req.get("who") or ""),
                                   version=manifest.version)
        return self.fabric().ask(plan, timeout=10.0)

    def stop(self, app: object) -> Any:
        """Remove an app's plan."""
        return self.fabric().ask(StopApp(check_app_name(app)), timeout=10.0)

    def tree(self) -> dict[str, Any]:
        """The live tree, each instance worker annotated with its status, each actor with its
        mailbox depth.

        Raises:
            ControlError: the mesh is stopping.
        """
        root = self.root()
        if root is None:
            raise ControlError("the mesh is stopping", 1)
        tree = describe_tree(root)
        annotate_tree(tree, self.status())
        self._add_edge_workers(tree)
        tree["pid"] = os.getpid()  # every actor runs in this process; workloads have their own
        return tree

    def _add_edge_workers(self, tree: dict[str, Any]) -> None:
        """Show the edge's worker processes (``[edge] workers``) as children of ``edge``."""
        ref = self.names.get("edge")
        if ref is None:
            return
        try:
            info: dict[str, Any] = ref.ask(GetInfo(), block=True, timeout=2.0)
            workers = info.get("workers")
        except Exception:  # the edge is restarting: the tree shows it without workers
            return
        for child in tree.get("children", []):
            if child.get("id") == "edge" and workers:
                child["children"] = workers

    def kill(self, req: dict[str, Any]) -> list[int]:
        """Signal the running instances of ``app`` (on ``node``, else every local node), or
        with ``edge`` one edge worker process.

        Raises:
            ControlError: nothing to signal here.
        """
        sig = int(req.get("signal", signal.SIGKILL))
        if req.get("edge"):
            ref = self.names.get("edge")
            pid: int | None = (ref.ask(KillEdgeWorker(sig), block=True, timeout=5.0)
                               if ref is not None else None)
            if pid is None:
                raise ControlError("no edge worker process to signal (the edge runs them only "
                                   "with [edge] workers >= 1)", 1)
            return [pid]
        app = check_app_name(req.get("app"))
        signalled = []
        for pid in kill_targets(self.status(app), app, req.get("node"), self.kill_scope):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                signalled.append(pid)
        if not signalled:
            raise ControlError(f"no running instance of {app}", 1)
        return signalled

    def reload_certs(self) -> dict[str, Any]:
        """Have the edge re-read its TLS certificates (new handshakes use them).

        Raises:
            ControlError: no edge here, or a new pair is bad (the old ones stay in use).
        """
        ref = self.names.get("edge")
        if ref is None:
            raise ControlError("no edge runs on this mesh", 1)
        why = ref.ask(ReloadCerts(), block=True, timeout=10.0)
        if why is not None:
            raise ControlError(f"certificates not reloaded, the old ones stay in use: {why}", 1)
        return {"reloaded": True}

    def down(self) -> dict[str, Any]:
        """Ask the mesh to shut down; answers at once."""
        self.request_stop()
        return {"stopping": True}


def annotate_tree(tree: dict[str, Any], status: Mapping[str, Any]) -> None:
    """Add each worker's instance (from ``status``) and each actor's mailbox depth, in place."""
    index: dict[str, list[dict[str, Any]]] = {}
    for app in status["apps"]:
        for inst in app["instances"]:
            index.setdefault(f"{app['app']}@{inst['node']}", []).append(inst)
    _annotate(tree, index)
    nodes = {str(n.get("name")): n for n in status.get("nodes") or ()}
    for child in tree.get("children") or ():  # mesh/nodes/<node>: its capacity and state
        for node in child.get("children") or () if child.get("id") == "nodes" else ():
            if node.get("id") in nodes and "cpu" in nodes[node["id"]]:
                node["capacity"] = nodes[node["id"]]


def _annotate(node: dict[str, Any], index: dict[str, list[dict[str, Any]]]) -> None:
    ref = node.pop("ref", None)
    if ref is not None:  # mailbox depth: a cheap look at the actor's inbox queue
        with contextlib.suppress(Exception):
            node["mailbox"] = ref.actor_inbox.qsize()
    if node.get("type") == "worker":
        meta = node.get("meta") or {}
        digest = meta.get("digest")
        key = f"{meta.get('app')}@{meta.get('node')}"
        for inst in index.get(key, []):
            if inst.get("child") == node.get("id") or (
                    "child" not in inst and digest and inst["digest"] == digest):
                node["instance"] = inst  # several per node: the child id tells them apart
    for child in node.get("children", []) or []:
        _annotate(child, index)
