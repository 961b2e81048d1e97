"""Builds and runs the whole supervision tree of one mesh (``mycelium up``).

```
mesh (one_for_one) ├ fabric ├ edge ├ control └ nodes (DynamicSupervisor)
   └ node-N (rest_for_one) ├ apps (DynamicSupervisor) └ agent
         apps └ <app> (one_for_one + backoff) └ <app>@node-N:<digest12>  (AppInstance)
```

``apps`` comes before ``agent`` under ``rest_for_one``: an agent crash restarts only the agent
(which adopts the running apps), while losing ``apps`` restarts the agent too, since its view
would be stale. Start order is fabric → edge → control → nodes, so shutdown (reverse order)
stops the workloads first and the fabric last; ``nodes`` is a DynamicSupervisor so that the
nodes drain their workloads in parallel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import queue
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pykka

from mycelium.edge import EdgeConfig
from mycelium.edge.actor import EdgeActor
from mycelium.errors import OperationFailed
from mycelium.fabric import Fabric, Names, SqliteStore
from mycelium.fabric.errors import BadPlan
from mycelium.fabric.validate import check_app_name, check_budget, check_plan
from mycelium.home import Home
from mycelium.messages import AppFailed, AppRestarted, GetStatus, PublishPlan, SetBudget, StopApp
from mycelium.node.agent import Agent
from mycelium.node.leftovers import reap_home
from mycelium.node.settings import NodeSettings, SporeInfo
from mycelium.operator import MeshConfig, SupervisionLog, format_record
from mycelium.operator.control import ControlActor, ControlError
from mycelium.operator.logs import LOG_NAME
from mycelium.spores import Limits, Repo, extract, load_trusted
from supervisors import (
    Backoff,
    ChildSpec,
    DynamicSupervisor,
    Exit,
    Report,
    SupervisedActor,
    Supervisor,
    SupFlags,
    describe_tree,
    start_child,
)
from supervisors.actor import actor_of

if TYPE_CHECKING:  # aiohttp's import is paid only by a mesh that serves the dashboard
    from mycelium.operator.dashboard import Dashboard, DashboardConfig

__all__ = ["Mesh", "MeshLocked", "reap_home"]


class MeshLocked(OperationFailed):
    """Another mesh already runs on this home."""


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (``M_ARENA_MAX``) before the tree's hundreds of threads start.

    glibc gives each new thread that allocates its own arena (up to 8 per core); with one thread
    per actor that is mostly untouched slack, which shows up as RSS. Two arenas serve a
    GIL-bound process as well. No-op where glibc is absent.
    """
    with contextlib.suppress(Exception):
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX


class Mesh:
    """One running mesh on one home.

    Args:
        home: The mesh home.
        config: The loaded configuration.
        nodes: How many node agents.
        edge_host: Where the edge listens.
        edge_port: The edge's port (0: any free port).
        out: Receives each human-readable supervision log line.
    """

    def __init__(self, home: Home, config: MeshConfig, nodes: int, edge_host: str,
                 edge_port: int, out: Callable[[str], None] = print) -> None:
        self.home = home
        self.config = config
        self.node_names = tuple(f"node-{i}" for i in range(1, nodes + 1))
        self.edge_host = edge_host
        self.edge_port = edge_port
        self.names = Names()
        self.stopped = threading.Event()
        self.edge_bound_port: int | None = None
        self.failure: str | None = None
        #: The live dashboard once :meth:`start_dashboard` ran.
        self.dashboard: Dashboard | None = None
        self._out = out
        #: ANSI colours in the human log lines (``up`` sets it when stdout is a terminal).
        self.color = False
        self._lock_file: IO[str] | None = None
        self._sup: pykka.ActorRef[Any] | None = None
        self._log: SupervisionLog | None = None
        self._lines: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self.repo = Repo(home.repo)
        self.limits = Limits.from_mb(config.spores.max_archive_mb, config.spores.max_binary_mb)
        digest = hashlib.sha256(str(home.root).encode()).hexdigest()[:8]
        self.edge_id = f"edge-{os.uname().nodename}-{digest}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Lock the home, reap leftovers, start the tree; return once the edge listens.

        Raises:
            MeshLocked: a mesh already runs on this home.
            StartError: a part of the tree could not start (e.g. the edge port is taken).
        """
        self.home.ensure()
        self._lock()
        _limit_malloc_arenas()
        reaped = reap_home(self.home)
        self._log = SupervisionLog(self.home, self.config.logs.rotate_bytes, self.config.logs.keep)
        self._writer = threading.Thread(target=self._write_lines, name="mesh-log", daemon=True)
        self._writer.start()
        if reaped:
            self._out(f"reaped {len(reaped)} workload(s) left by a previous mesh: "
                      f"{' '.join(map(str, reaped))}")
        self._sup = Supervisor.start(SupFlags("one_for_one", intensity=10, period=10.0),
                                     self._children(), path="mesh", reporter=self._report)
        root = actor_of(self._sup)
        if isinstance(root, SupervisedActor):
            root.watch(self._root_exited)

    def _root_exited(self, exit_: Exit) -> None:
        """The root supervisor ended; unless we stopped it, the mesh gave up: stop `up`."""
        if not exit_.normal or "cause" in exit_.details:  # e.g. it reached its intensity
            self.failure = str(exit_.details.get("cause", exit_.reason))
        self.stopped.set()

    def start_dashboard(self, config: DashboardConfig) -> Dashboard:
        """Serve the live dashboard from this process (after :meth:`start`); :meth:`stop`
        stops it first.

        Raises:
            UnsafeBind: a non-loopback host without ``allow_remote``, or the edge's port.
            DashboardError: the port cannot be bound.
        """
        from mycelium.operator.dashboard import Dashboard

        dash = Dashboard(dataclasses.replace(config, edge_port=self.edge_bound_port,
                                             edge_host=self.edge_host),
                         tree=lambda: self._op_tree({}), status=self.status,
                         log_file=self.home.logs / LOG_NAME)
        self.dashboard = dash
        dash.start()
        return dash

    def stop(self) -> None:
        """Graceful shutdown in reverse start order; idempotent."""
        dash, self.dashboard = self.dashboard, None
        if dash is not None:
            dash.stop()
        sup, self._sup = self._sup, None
        if sup is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                sup.stop(timeout=120)
        if self._writer is not None:
            self._lines.put(None)
            self._writer.join(5.0)
            self._writer = None
        if self._log is not None:
            self._log.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        self.stopped.set()

    def request_stop(self) -> None:
        """Ask the foreground ``up`` to shut down (from ``down`` or a signal)."""
        self.stopped.set()

    def _lock(self) -> None:
        f = open(self.home.lock_file, "a+")  # noqa: SIM115 - held for the mesh's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise MeshLocked(f"a mesh is already running at {self.home.root} (pid {pid}); "
                             f"stop it with `mycelium down --home {self.home.root}`") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock_file = f

    # -- the tree --------------------------------------------------------------------------

    def _children(self) -> list[ChildSpec]:
        names, home, cfg = self.names, self.home, self.config
        store = home.state / "fabric.db"
        nodes = self.node_names
        edge_config = EdgeConfig(host=self.edge_host, port=self.edge_port, edge_id=self.edge_id,
                                 connect_timeout=cfg.edge.connect_timeout,
                                 read_timeout=cfg.edge.read_timeout,
                                 max_body_bytes=cfg.edge.max_body or None)

        def listening(port: int) -> None:
            self.edge_bound_port = port

        node_specs = [self._node_spec(n) for n in nodes]

        def start_nodes() -> pykka.ActorRef[Any]:
            # a DynamicSupervisor stops its children concurrently: the nodes drain their
            # workloads in parallel on shutdown instead of one node after the other
            ref = DynamicSupervisor.start(path="mesh/nodes", reporter=self._report,
                                          intensity=10, period=10.0)
            for spec in node_specs:
                start_child(ref, spec)
            return ref

        return [
            ChildSpec("fabric", lambda: Fabric.start(names, lambda: SqliteStore(store), nodes,
                                                     self.repo.has,
                                                     parallel=cfg.rollout.parallel)),
            ChildSpec("edge", lambda: EdgeActor.start(names, edge_config, listening),
                      shutdown=10.0),
            ChildSpec("control", lambda: ControlActor.start(names, home.control_socket,
                                                            self._ops())),
            ChildSpec("nodes", start_nodes, type="supervisor"),
        ]

    def _node_spec(self, node: str) -> ChildSpec:
        cfg, names, home = self.config, self.names, self.home
        restart = cfg.restart
        settings = NodeSettings(
            cpu=cfg.node.cpu, mem_mb=cfg.node.mem_mb,
            health_interval=cfg.instance.health_interval,
            health_timeout=cfg.instance.health_timeout,
            health_failures=cfg.instance.health_failures,
            sample_interval=cfg.instance.mem_sample_interval,
            stop_grace=cfg.instance.stop_grace,
            backoff=Backoff(base=max(restart.backoff_base, 0.001),
                            cap=max(restart.backoff_cap, restart.backoff_base, 0.001),
                            jitter=restart.backoff_jitter, reset_after=restart.reset_after),
            host="127.0.0.1", startup_deadline=cfg.instance.startup_deadline,
            intensity=restart.intensity, period=restart.period)
        reporter = self._report

        def apps_reporter(report: Report) -> None:
            reporter(report)
            # an app supervisor that reached its intensity exits shutdown (as in OTP), with
            # the cause in the report's extra
            if report.event == "child_terminated" and (
                    report.reason not in (None, "normal", "shutdown") or "cause" in report.extra):
                names.tell(node, AppFailed(str(report.child),
                                           str(report.extra.get("cause", report.reason))))
            elif report.event == "child_restarted":
                names.tell(node, AppRestarted(str(report.child)))

        # An app supervisor that reached its restart intensity is restarted by `apps` after a
        # growing delay (1 s … 60 s): a crash-looping app keeps trying, ever more slowly, and
        # never escalates to the node or the mesh.
        app_backoff = Backoff(base=1.0, cap=60.0, jitter=0.1, reset_after=120.0)

        def start_apps() -> pykka.ActorRef[Any]:
            ref = DynamicSupervisor.start(path=f"mesh/nodes/{node}/apps",
                                          reporter=apps_reporter, backoff=app_backoff,
                                          intensity=1000, period=1.0)
            names.register(f"{node}/apps", ref)
            return ref

        def start_agent() -> pykka.ActorRef[Any]:
            return Agent.start(node, names, settings, self._spore_info, self._extract,
                               home.instances, reporter)

        children = [ChildSpec("apps", start_apps, type="supervisor"),
                    ChildSpec("agent", start_agent)]
        return ChildSpec(node, lambda: Supervisor.start(
            SupFlags("rest_for_one", intensity=10, period=10.0), children,
            path=f"mesh/nodes/{node}", reporter=reporter), type="supervisor")

    def _spore_info(self, digest: str) -> SporeInfo:
        verified = self.repo.verify(digest, load_trusted(self.home), self.limits)
        m = verified.manifest
        return SporeInfo(path=self.repo.path(digest), args=tuple(m.args), env=dict(m.env),
                         health=m.health)

    def _extract(self, spore: Path, dest: Path) -> Path:
        return extract(spore, dest, load_trusted(self.home), self.limits)

    # -- supervision log -------------------------------------------------------------------

    def _report(self, report: Report) -> None:
        record = report.to_dict()
        extra = record.get("extra") or {}
        record["app"] = extra.get("app")
        for key in ("pid", "restarts"):
            if key in extra:
                record[key] = extra[key]
        self._lines.put(record)

    def _write_lines(self) -> None:
        while True:
            record = self._lines.get()
            if record is None:
                return
            with contextlib.suppress(Exception):
                if self._log is not None:
                    self._log.write(record)
                dashboard = self.dashboard  # stop() may clear it meanwhile
                if dashboard is not None:
                    dashboard.publish(record)
                self._out(format_record(record, color=self.color))

    # -- control ops -----------------------------------------------------------------------

    def _fabric(self) -> pykka.ActorRef[Any]:
        ref = self.names.get("fabric")
        if ref is None:
            raise ControlError("the fabric is restarting; try again", 1)
        return ref

    def _ops(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {"status": self._op_status, "deploy": self._op_deploy, "stop": self._op_stop,
                "tree": self._op_tree, "kill": self._op_kill, "down": self._op_down}

    def status(self, app: str | None = None) -> dict[str, Any]:
        """The status document (``mycelium status``; its fields are in docs/reference.md)."""
        result = self._fabric().ask(GetStatus(app), timeout=10.0)
        assert isinstance(result, dict)
        return result

    def _op_status(self, req: dict[str, Any]) -> Any:
        return self.status(req.get("app"))

    def _op_deploy(self, req: dict[str, Any]) -> Any:
        app = check_app_name(req.get("app"))
        digest = self.repo.resolve(str(req.get("digest", "")))
        manifest = self.repo.verify(digest, load_trusted(self.home), self.limits).manifest
        if manifest.name != app:
            raise BadPlan(f"spore {digest[:12]} is app {manifest.name!r}, not {app!r}")
        n_max = req.get("max", 1)
        warmup = req.get("warmup")
        plan = check_plan(PublishPlan(app=app, digest=digest, min=req.get("min", 1), max=n_max,
                                      warmup=manifest.warmup if warmup is None else warmup,
                                      timeout=req.get("rollout_timeout", 60.0)))
        max_instances = req.get("max_instances")
        budget = check_budget(SetBudget(app=app, max_instances=n_max if max_instances is None
                                        else max_instances, cpu=req.get("cpu", 0.1),
                                        mem=req.get("mem", 256)))
        return self._fabric().ask(dataclasses.replace(plan, budget=budget), timeout=10.0)

    def _op_stop(self, req: dict[str, Any]) -> Any:
        return self._fabric().ask(StopApp(check_app_name(req.get("app"))), timeout=10.0)

    def _op_tree(self, _req: dict[str, Any]) -> Any:
        if self._sup is None:
            raise ControlError("the mesh is stopping", 1)
        tree = describe_tree(self._sup)
        index: dict[str, list[dict[str, Any]]] = {}
        for app in self.status()["apps"]:
            for inst in app["instances"]:
                index.setdefault(f"{app['app']}@{inst['node']}", []).append(inst)
        _annotate(tree, index)
        tree["pid"] = os.getpid()  # every actor runs in this process; workloads have their own
        return tree

    def _op_kill(self, req: dict[str, Any]) -> Any:
        app = check_app_name(req.get("app"))
        node = req.get("node")
        sig = int(req.get("signal", signal.SIGKILL))
        pids = []
        for doc in self.status(app)["apps"]:
            for inst in doc["instances"]:
                if inst["pid"] and inst["state"] in ("Launching", "Ready") and (
                        node is None or inst["node"] == node):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(inst["pid"], sig)
                        pids.append(inst["pid"])
        if not pids:
            raise ControlError(f"no running instance of {app}"
                               + (f" on {node}" if node else ""), 1)
        return pids

    def _op_down(self, _req: dict[str, Any]) -> Any:
        self.request_stop()
        return {"stopping": True}


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
            if digest and inst["digest"] == digest:
                node["instance"] = inst
    for child in node.get("children", []) or []:
        _annotate(child, index)
