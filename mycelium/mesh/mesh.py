"""The lifecycle of one running mesh (``mycelium up``): the parts composed, started, stopped.

:class:`Mesh` holds no policy of its own. It locks the home (:class:`~.lock.HomeLock`), reaps
what a previous mesh left (at once, or, when its edge workers still serve and ours adopt
them, once our instances took over: :mod:`mycelium.edge.handover`), starts the supervision
log (:class:`~.logsink.LogSink`), lets its :class:`~.backend.FabricBackend` run its steps
before the tree, starts the root supervisor with the children :class:`~.tree.TreeBuilder`
builds (the control socket serving :class:`~.ops.ControlOps`), optionally serves the
dashboard, and undoes all of it in reverse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

from mycelium.edge.config import edge_config
from mycelium.edge.handover import live_records, stop_orphans
from mycelium.edge.limits import raise_nofile_limit
from mycelium.edge.tls import TLSSettings
from mycelium.fabric import Names
from mycelium.home import Home
from mycelium.node.cgroups import CgroupTree
from mycelium.node.isolation import Isolation
from mycelium.node.leftovers import (
    Leftovers,
    reap_home,
    record_leftover_ends,
    survey_home,
)
from mycelium.node.output import mesh_stopping
from mycelium.node.sockets import established_to, port_of
from mycelium.node.sweeper import wait_swept
from mycelium.operator import MeshConfig
from mycelium.operator.logs import LOG_NAME
from mycelium.priority import Plan, lower_control_plane
from mycelium.secrets import Secrets, SecretValues, load_key
from mycelium.spores import Limits
from supervisors import Exit, SupervisedActor, Supervisor
from supervisors.actor import actor_of

from .backend import FabricBackend
from .lock import HomeLock
from .logsink import LogSink
from .node_ops import node_handlers
from .ops import ControlOps
from .secret_ops import SecretOps
from .sporesource import SporeSource
from .tree import ROOT_FLAGS, TreeBuilder, node_settings

if TYPE_CHECKING:  # aiohttp's import is paid only by a mesh that serves the dashboard
    from mycelium.operator.dashboard import Dashboard, DashboardConfig

__all__ = ["Mesh", "limit_malloc_arenas"]


def limit_malloc_arenas(arenas: int = 2) -> None:
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
        backend: Where the control-plane state lives (:class:`~.backend.LocalFabric` on one
            machine, :class:`mycelium.member.Member` in a multi-machine mesh).
        edge_host: Where the edge listens.
        edge_port: The edge's port (0: any free port).
        out: Receives each human-readable supervision log line.
        color: ANSI colours in those lines (``up`` sets it when stdout is a terminal).
        tls: The edge's TLS listener (``up --tls-cert``), or None.
    """

    def __init__(self, home: Home, config: MeshConfig, backend: FabricBackend, edge_host: str,
                 edge_port: int, out: Callable[[str], None] = print, *,
                 color: bool = False, tls: TLSSettings | None = None) -> None:
        self.home = home
        self.config = config
        self.backend = backend
        self.node_names = backend.node_names
        self.edge_host = edge_host
        self.edge_port = edge_port
        self.names = Names()
        #: Set once the mesh should stop (``down``, a signal) or has stopped.
        self.stopped = threading.Event()
        self.edge_bound_port: int | None = None
        self.tls = tls
        #: The edge's bound TLS port, once it listens (None without TLS).
        self.edge_tls_port: int | None = None
        #: Why the root supervisor gave up, if it did.
        self.failure: str | None = None
        #: The live dashboard once :meth:`start_dashboard` ran.
        self.dashboard: Dashboard | None = None
        self.out = out
        digest = hashlib.sha256(str(home.root).encode()).hexdigest()[:8]
        self.edge_id = f"edge-{os.uname().nodename}-{digest}"
        self.lock = HomeLock(home)
        self.log = LogSink(home, config.logs.rotate_bytes, config.logs.keep, out, color=color)
        limits = Limits.from_mb(config.spores.max_archive_mb, config.spores.max_binary_mb)
        self.spores = SporeSource(home, limits, backend.fetch)
        self.ops = ControlOps(self.names, self.spores, config.rollout.timeout,
                              backend.kill_scope, lambda: self._root, self.request_stop)
        self.secret_ops = SecretOps(self.names, self.secrets)
        self._root: pykka.ActorRef[Any] | None = None
        #: who workloads run as, where their directories are (a bad ``run_as`` fails here)
        self.isolation = Isolation.resolve(
            home.root, run_as=config.node.run_as, path=config.node.path,
            nofile=config.node.nofile, instances_dir=config.node.instances_dir)
        self.ops.isolation = self.isolation.summary()
        self._tail_secrets: dict[str, tuple[float, SecretValues]] = {}
        #: what a killed mesh left serving through its edge workers, reaped at the hand-over
        self._leftovers: Leftovers | None = None
        self._leftovers_lock = threading.Lock()
        #: what ``[mesh] control_nice`` did to the mesh's CPU priority (:meth:`start`)
        self.priority = Plan(None, None, os.getpriority(os.PRIO_PROCESS, 0))

    def secrets(self) -> Secrets:
        """The mesh's secrets: its backend's store (once open), sealed under the home's key."""
        home = self.home
        return Secrets(self.backend.secret_store(), lambda create: load_key(home, create=create))

    def secret_values(self, app: str) -> SecretValues:
        """``app``'s secrets, opened: what an instance being spawned receives."""
        return self.secrets().values(app)

    def start(self) -> None:
        """Lock the home, reap leftovers, start the tree; return once the edge listens.

        Raises:
            MeshLocked: a mesh already runs on this home.
            StartError: a part of the tree could not start (e.g. the edge port is taken).
            OperationFailed: the backend could not open (e.g. etcd unreachable).
            CgroupError: ``[node] cgroup`` names no writable cgroup v2 directory.
        """
        self.home.ensure()
        self.lock.acquire()
        # a bad [node] cgroup stops `up` here, before anything else was started
        cgroups = CgroupTree.detect(self.home.root, self.config.node.cgroup)
        self.isolation = dataclasses.replace(self.isolation, cgroups=cgroups)
        self.ops.isolation = self.isolation.summary()
        limit_malloc_arenas()
        self.isolation.arm_mesh()  # before any thread: they and the workloads inherit it
        in_process_edge = self.backend.with_edge and self.config.edge.workers == 0
        self.priority = lower_control_plane(self.config.mesh.control_nice, in_process_edge)
        raise_nofile_limit()  # client connections must never starve probes and spawns
        self.isolation.ensure_dirs(self.home.root)
        reaped = self._leftovers_at_start(cgroups)
        self.log.start()
        if reaped:
            self.out(f"reaped {len(reaped)} workload(s) left by a previous mesh: "
                     f"{' '.join(map(str, reaped))}")
        elif self._leftovers is not None and self._leftovers.pids:
            self.out(f"adopting the edge workers of a previous mesh: its "
                     f"{len(self._leftovers.pids)} workload process(es) serve until ours "
                     f"take over")
        self.out(self.isolation.describe())
        if self.priority.why:  # asked for, but the children could not keep their nice
            self.log.note("info", self.priority.why)
        if self.isolation.as_root:
            warning = ("warning: [node] run_as = root: workloads run as root, "
                       "unisolated from the mesh and from each other")
            self.out(warning)
            self.log.note("warning", warning)
        try:
            self.backend.open(self.spores.repo, self.out)
        finally:  # the ends the reaped instances left, their tails redacted (hidden on failure)
            if self._leftovers is None:  # (those serving until ours take over: at the reap)
                record_leftover_ends(self.home, self.secret_values)
        self._root = Supervisor.start(ROOT_FLAGS, self._children(), path="mesh",
                                      reporter=self.log.report)
        root = actor_of(self._root)
        if isinstance(root, SupervisedActor):
            root.watch(self._root_exited)

    def _leftovers_at_start(self, cgroups: CgroupTree | None) -> list[int]:
        """Reap what a killed mesh left, now, or (when its edge workers still serve and ours
        will adopt them) only once our instances took over; the pids reaped now."""
        run_dir = self.home.root / "run"
        orphans = live_records(run_dir)
        adopting = bool(orphans) and self.backend.with_edge and self.config.edge.workers > 0 \
            and self.edge_port != 0
        if orphans and not adopting:
            stop_orphans(run_dir, orphans)  # no edge of ours will adopt them: they go first
        iso = self.isolation
        if not adopting:
            return reap_home(self.home, iso.instances_dir, iso.uids, cgroups)
        leftovers = survey_home(self.home, iso.instances_dir, iso.uids, cgroups)
        if iso.pool is not None:
            for uid in leftovers.uids:
                iso.pool.reserve(uid, "a previous mesh's instance")
        self._leftovers = leftovers
        return []

    def _handover(self, urls: tuple[str, ...]) -> None:
        """The edge no longer routes to the old instances: let their requests finish (up to
        the drain grace), then reap them (called once, from the edge's thread)."""
        deadline = time.monotonic() + max(self.config.instance.stop_grace, 5.0)
        ports = sorted({p for p in map(port_of, urls) if p is not None})
        while ports and established_to(ports) and time.monotonic() < deadline:
            time.sleep(0.01)  # the kernel's table: no event says a connection closed
        reaped = self._reap_leftovers()
        if reaped:
            self.out(f"reaped {len(reaped)} workload(s) left by a previous mesh, once ours "
                     f"took over: {' '.join(map(str, reaped))}")

    def _reap_leftovers(self) -> list[int]:
        with self._leftovers_lock:
            leftovers, self._leftovers = self._leftovers, None
        if leftovers is None:
            return []
        reaped = leftovers.reap(self.secret_values)
        if self.isolation.pool is not None:
            for uid in leftovers.uids:
                self.isolation.pool.release(uid)
        return reaped

    def _children(self) -> list[Any]:
        cfg = self.config
        builder = TreeBuilder(self.names, node_settings(cfg, self.isolation), self.spores,
                              self.home.instances, self.log.report, self.secret_values)
        edge = None
        if self.backend.with_edge:
            edge = dataclasses.replace(
                edge_config(cfg, host=self.edge_host, port=self.edge_port,
                            edge_id=self.edge_id, home=self.home.root, tls=self.tls),
                on_handover=self._handover)
        fabric = self.backend.fabric_child(self.names, self.spores.repo, cfg.rollout.parallel,
                                            history_keep=cfg.rollout.history_keep,
                                            down_after=cfg.scale.down_after,
                                            report=self.log.report)
        return builder.children(fabric, edge, self._edge_listening, self.home.control_socket,
                                {**self.ops.handlers(), **self._desired_ops(),
                                 **self.secret_ops.handlers(), **node_handlers(self.ops.fabric)},
                                self.node_names, cfg.control)

    def _desired_ops(self) -> dict[str, Any]:
        """``plan``/``apply``/``export``'s ops (``desired``, ``apply``)."""
        from mycelium.desired.mesh_ops import DesiredOps

        return DesiredOps(self.ops.status, self.ops.fabric, self.spores,
                          self.config.rollout.timeout).ops()

    def _edge_listening(self, port: int, tls_port: int | None = None) -> None:
        self.edge_bound_port = port
        self.edge_tls_port = tls_port

    def reload_certs(self) -> str | None:
        """Have the edge re-read its TLS certificates (SIGHUP); the reason if it did not."""
        from mycelium.operator.control import ControlError

        try:
            self.ops.reload_certs()
        except ControlError as exc:
            return str(exc)
        return None

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
        from mycelium.operator.output import instance_tail

        instances = self.home.instances
        dash = Dashboard(dataclasses.replace(config, edge_port=self.edge_bound_port,
                                             edge_host=self.edge_host),
                         tree=self.ops.tree, status=self.ops.status,
                         log_file=self.home.logs / LOG_NAME,
                         output=lambda iid: self.dashboard_tail(instance_tail(instances, iid, 3),
                                                             iid))
        dash.start()
        self.dashboard = dash
        self.log.subscribe(dash.publish)
        return dash

    def dashboard_tail(self, lines: list[str], instance: str) -> list[str]:
        """A workload's last lines as the dashboard shows them: its app's secret values hidden
        (nothing shown when they cannot be opened to hide them)."""
        from mycelium.secrets import redact
        from mycelium.secrets.redact import HIDDEN_TAIL

        if not lines:
            return lines
        app, now = instance.split("@", 1)[0], time.monotonic()
        cached = self._tail_secrets.get(app)
        if cached is None or now - cached[0] > 2.0:  # one store read per app per push burst
            try:
                cached = self._tail_secrets[app] = (now, self.secret_values(app))
            except Exception:
                return [HIDDEN_TAIL]
        return [redact(line, cached[1]) for line in lines]

    def stop(self) -> None:
        """Graceful shutdown in reverse start order; idempotent."""
        dash, self.dashboard = self.dashboard, None
        if dash is not None:
            self.log.unsubscribe(dash.publish)
            dash.stop()
        root, self._root = self._root, None
        if root is not None:
            mesh_stopping(self.home.instances)  # these instances are "the last that ran"
            with contextlib.suppress(pykka.ActorDeadError):
                root.stop(timeout=120)
            wait_swept()  # what crashed instances left outside their groups is gone too
        self._reap_leftovers()  # stopped before our instances took over: theirs go too
        self.backend.close()
        self.log.close()
        if root is not None:
            self.isolation.forget_dirs()
        if self.isolation.cgroups is not None:
            self.isolation.cgroups.remove()  # every instance's went with it
        self.lock.release()
        self.stopped.set()

    def request_stop(self) -> None:
        """Ask the foreground ``up`` to shut down (from ``down`` or a signal)."""
        self.stopped.set()
