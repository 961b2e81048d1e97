"""The edge actor: owns one :class:`EdgeServer` and applies the fabric's routing pushes.

The edge never asks the fabric per request: the fabric pushes
:class:`~mycelium.messages.EndpointsChanged` and the actor swaps the server's immutable
snapshot. A (re)started edge binds its port and asks the fabric for the current table; a
crashed edge closes its server before its supervisor starts the successor on the same port.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from mycelium._logger import get_logger
from mycelium.fabric.names import Names
from mycelium.fabric.switch import IsRouted
from mycelium.messages import (
    AppRoute,
    Crash,
    CrashRequested,
    EdgeLoad,
    EndpointsChanged,
    GetInfo,
    KillEdgeWorker,
    ReloadCerts,
    SyncRequest,
    Tick,
    WakeApp,
)
from mycelium.rollout_messages import EdgeAnswers
from supervisors import SupervisedActor
from supervisors.reports import Report, Reporter
from supervisors.timers import TimerHandle, shared_timers

from .config import EdgeConfig
from .errors import EdgeConfigError, EdgeError
from .load import LoadMeter
from .routes import Endpoint, Route, RouteTable
from .server import EdgeServer
from .workers import EdgeWorkers

__all__ = ["LOAD_PERIOD", "EdgeActor", "route_table"]

LOAD_PERIOD = 0.25
"""Seconds between two load reports to the fabric."""

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class _ReportLoad:
    """Time for the next load report (a timer's, off the wire)."""


def route_table(message: EndpointsChanged,
                cache: dict[AppRoute, Route] | None = None) -> RouteTable:
    """The edge's routing snapshot for a fabric push (bad entries are skipped and logged).

    ``cache`` maps the fabric's unchanged per-app routes to the Route built last time, so a push
    after one instance changed re-parses one app's endpoints, not the whole mesh's, and of
    that app only the endpoints that are new.
    """
    table: dict[str, Route] = {}
    before = {} if cache is None else {route.app: route for route in cache.values()}
    for app_route in message.routes:
        if cache is not None and app_route in cache:
            table[app_route.app] = cache[app_route]
            continue
        # an app with 1,000 endpoints of which one changed parses one URL, not 1,000
        known = {(e.url, e.instance, e.digest, e.weight): e
                 for e in (before[app_route.app].endpoints if app_route.app in before else ())}
        endpoints = []
        for ep in app_route.endpoints:
            same = known.get((ep.url, ep.instance, ep.digest, ep.weight))
            if same is not None:
                endpoints.append(same)
                continue
            try:
                endpoints.append(Endpoint(url=ep.url, instance=ep.instance, digest=ep.digest,
                                          weight=ep.weight))
            except Exception as exc:
                log.warning("edge: skipping endpoint %s of %s: %s", ep.url, app_route.app, exc)
        table[app_route.app] = Route(app=app_route.app, endpoints=tuple(endpoints),
                                     hosts=app_route.hosts, hold=app_route.hold)
    if cache is not None:
        current = {r: table[r.app] for r in message.routes if r.app in table}
        cache.clear()
        cache.update(current)
    try:
        return RouteTable(table)
    except EdgeConfigError as exc:  # the fabric keeps host names unique; never lose routes
        log.warning("edge: host routes dropped: %s", exc)
        return RouteTable({app: Route(route.app, route.endpoints) for app, route in table.items()})


class EdgeActor(SupervisedActor):
    """The ``edge`` worker of the mesh supervisor.

    Args:
        names: The mesh's registered names.
        config: Where the edge listens and its id (``X-Mycelium-Edge``).
        on_listening: Called with the bound port once the edge accepts requests.
        reporter: Receives the edge's own supervision-log records (``endpoint_ejected``,
            ``endpoint_returned``); called from the edge's loop thread, so it must be
            thread-safe and quick (the mesh's puts the record on its log queue).
    """

    def __init__(self, names: Names, config: EdgeConfig,
                 on_listening: Any = None, reporter: Reporter | None = None) -> None:
        super().__init__()
        self._names = names
        self._config = config
        self._reporter = reporter
        self._server: EdgeServer | EdgeWorkers | None = None
        self._on_listening = on_listening
        self._cache: dict[AppRoute, Route] = {}
        self._report: TimerHandle | None = None
        self._meter = LoadMeter()
        self._load_timer: TimerHandle | None = None

    def on_start(self) -> None:
        """Bind the port (in this process, or in ``[edge] workers`` processes), register as
        ``edge`` and ask the fabric for the routes.

        Raises:
            EdgeError: the port cannot be bound, or a worker did not start.
        """
        names = self._names

        def wake(app: str) -> None:  # from the edge's loop thread: a tell is thread-safe
            names.tell("fabric", WakeApp(app))

        config = dataclasses.replace(self._config, on_wake=wake)
        server: EdgeServer | EdgeWorkers
        if config.workers:
            server = EdgeWorkers(config, self._reporter)
        else:
            server = EdgeServer(config, self._reporter)
        server.start()
        self._server = server
        self._meter = LoadMeter()
        self._report_load()
        self._names.register("edge", self.actor_ref)
        self._names.tell("fabric", SyncRequest("edge"))
        if self._on_listening is not None:
            if server.tls_port is not None:  # the TLS port too, for `up`'s "mesh up" line
                self._on_listening(server.port, tls_port=server.tls_port)
            else:
                self._on_listening(server.port)
        self._arm()

    def _arm(self) -> None:
        """Report per-digest answers (of apps running a canary) to the fabric every second."""
        ref = self.actor_ref
        self._report = shared_timers().call_later(
            1.0, lambda: ref.tell(Tick("answers")) if ref.is_alive() else None)

    def on_stop(self) -> None:
        """Stop accepting, let in-flight requests finish, close."""
        self._close(5.0)

    def on_failure(self, *_exc: object) -> None:
        """Release the port quickly for the successor."""
        self._close(0.5)

    def _report_load(self) -> None:
        """Every half second: the apps' in-flight means to the fabric (autoscaling, idling)."""
        server = self._server
        if server is None:
            return
        totals = server.load_totals()  # worker processes: their last metrics, summed
        loads = self._meter.sample(time.monotonic(), totals)
        if loads:
            self._names.tell("fabric", EdgeLoad(tuple(loads)))
        ref = self.actor_ref
        self._load_timer = shared_timers().call_later(
            LOAD_PERIOD, lambda: ref.tell(_ReportLoad()) if ref.is_alive() else None)

    def _close(self, grace: float) -> None:
        if self._report is not None:
            shared_timers().cancel(self._report)
            self._report = None
        if self._load_timer is not None:
            shared_timers().cancel(self._load_timer)
            self._load_timer = None
        self._names.unregister("edge", self.actor_ref)
        if self._server is not None:
            self._server.stop(grace=grace)
            self._server = None

    def _reload_certs(self) -> str | None:
        """Re-read the TLS pairs; on failure keep the old ones, log it and say why."""
        server = self._server
        if server is None:
            return "the edge is not running"
        try:
            server.reload_certs()
        except (EdgeError, EdgeConfigError) as exc:
            if self._reporter is not None:
                self._reporter(Report(ts=time.time(), event="certs_reload_failed",
                                      supervisor="mesh/edge", child="edge", reason=str(exc)))
            return str(exc)
        if self._reporter is not None:
            self._reporter(Report(ts=time.time(), event="certs_reloaded",
                                  supervisor="mesh/edge", child="edge",
                                  reason="new TLS handshakes use the new certificates"))
        return None

    def on_receive(self, message: Any) -> Any:
        """Apply a routing push; answer GetInfo; crash on Crash.

        Raises:
            CrashRequested: on :class:`Crash`.
        """
        match message:
            case _ReportLoad():
                self._report_load()
            case EndpointsChanged():
                if self._server is not None:
                    self._server.set_restarts(dict(message.restarts))
                    self._server.set_routes(route_table(message, self._cache))
            case IsRouted(url=url):  # a draining instance waits until it left the table
                server = self._server
                if server is None:
                    return False
                if isinstance(server, EdgeWorkers):  # until no worker serves an older snapshot
                    if server.may_route(url):
                        return True
                elif any(ep.url == url for route in server.routes.values()
                         for ep in route.endpoints):
                    return True
                # gone: also close idle keep-alive connections that requests finishing since the
                # last push handed back to the pool, so that what stays open is in flight
                server.set_routes(server.routes)
                return False
            case Tick(kind="answers"):
                counts = self._server.answer_counts() if self._server is not None else ()
                if counts:
                    self._names.tell("fabric", EdgeAnswers(counts))
                if self._server is not None:
                    self._arm()
            case GetInfo():
                server = self._server
                info: dict[str, Any] = {
                    "name": "edge", "port": server.port if server else None,
                    "routes": {app: len(r.endpoints) for app, r in server.routes.items()}
                    if server else {}}
                if isinstance(server, EdgeWorkers):
                    info["workers"] = server.describe()
                return info
            case KillEdgeWorker(signal=sig):
                if not isinstance(self._server, EdgeWorkers):
                    return None  # no worker processes: [edge] workers = 0
                try:
                    return self._server.kill_one(sig)
                except EdgeError:
                    return None
            case ReloadCerts():
                return self._reload_certs()
            case Crash():
                raise CrashRequested("crash requested")
        return None
