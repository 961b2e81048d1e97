"""One edge worker process: an :class:`EdgeServer` on the shared port, fed by its parent.

Run as ``python -m mycelium.edge.worker`` by :class:`~mycelium.edge.workers.EdgeWorkers`.
The parent talks to it over its stdin and stdout, one JSON object per line:

- parent → worker: first ``{"config": {...}, "snapshot": {...} | null}`` (the
  :class:`EdgeConfig` fields and the latest snapshot, applied before it listens), then
  ``{"version": v, "routes": {app: [[url, instance], ...]}, "restarts": {app: n}}``
  for every routing snapshot (versioned: a worker applies only newer ones);
- worker → parent: ``{"listening": port, "pid": pid}`` once it serves, ``{"applied": v}``
  after each snapshot, ``{"report": {...}}`` for its supervision-log records (ejections),
  ``{"metrics": {...}}`` every ``METRICS_EVERY`` seconds (its counters), and
  ``{"access_bytes": n}`` followed by n bytes of encoded access log lines (the parent writes
  them to the one ``access.jsonl``, no re-encoding);
- parent → worker ``{"reload_certs": n}`` (re-read the TLS pairs), answered ``{"certs": n}``;
- parent → worker, also: ``{"peers": {...}}``, the other workers' counters summed, which its
  ``/_mycelium/metrics`` adds to its own, so any worker shows the whole edge;
- a request held for an app scaled to zero asks for its place, ``{"hold": [app, ticket]}``;
  the parent answers ``{"admit": [ticket, true|false]}`` (``hold_max`` counts over every
  worker, and the parent wakes the app once per wave) and is told ``{"unhold": [app,
  ticket]}`` when it stops waiting; the release itself comes with the routing snapshot;
- ejection is decided by the parent for all workers: a worker sends
  ``{"outcome": [app, url, instance, ok, total]}`` for each failure (and each success of a
  failing endpoint) and mirrors ``{"ejections": {"failing": {url: n}, "out": {url: [app,
  instance]}}}`` from its parent.

The worker stops, draining its requests, on SIGTERM or when its stdin closes (its parent is
gone): a worker never outlives the mesh that started it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from mycelium.edge.config import EdgeConfig
from mycelium.edge.routes import Endpoint, Route, RouteTable
from mycelium.edge.tls import CertPair, TLSSettings
from supervisors.reports import Report

__all__ = ["config_from_wire", "config_to_wire", "routes_from_wire", "routes_to_wire"]

_STOP_GRACE = 5.0
METRICS_EVERY = 0.25
"""Seconds between two metrics reports of a worker to its parent."""


def config_to_wire(config: EdgeConfig) -> dict[str, Any]:
    """The config as JSON-able data (paths as strings)."""
    data = dataclasses.asdict(config)
    data.pop("on_wake", None)  # the parent's hooks: a worker's held requests ask it instead
    data.pop("hold_gate", None)
    if data["access_log_home"] is not None:
        data["access_log_home"] = str(data["access_log_home"])
    if config.tls is not None:
        data["tls"] = {"port": config.tls.port, "redirect": config.tls.redirect,
                       "pairs": [[str(p.cert), str(p.key)] for p in config.tls.pairs]}
    return data


def config_from_wire(data: Mapping[str, Any]) -> EdgeConfig:
    """Rebuild the config sent by :func:`config_to_wire`.

    Raises:
        EdgeConfigError: A value is out of range.
    """
    values = dict(data)
    if values.get("access_log_home") is not None:
        values["access_log_home"] = Path(values["access_log_home"])
    tls = values.get("tls")
    if tls is not None:
        values["tls"] = TLSSettings(port=int(tls["port"]), redirect=bool(tls["redirect"]),
                                    pairs=tuple(CertPair(Path(c), Path(k))
                                                for c, k in tls["pairs"]))
    return EdgeConfig(**values)


def routes_to_wire(table: RouteTable) -> dict[str, Any]:
    """A routing snapshot as JSON-able data (a canary's endpoints with digest and weight; the
    apps' host names under the key ``"\x00hosts"`` and the apps whose requests are held while
    they wake under ``"\x00hold"``, keys no app name can be)."""
    out: dict[str, Any] = {
        app: [[ep.url, ep.instance, ep.digest, ep.weight] if ep.digest or ep.weight
              else [ep.url, ep.instance] for ep in route.endpoints]
        for app, route in table.items()}
    hosts = {app: list(route.hosts) for app, route in table.items() if route.hosts}
    if hosts:
        out["\x00hosts"] = hosts
    hold = [app for app, route in table.items() if route.hold]
    if hold:
        out["\x00hold"] = hold
    return out


def routes_from_wire(data: Mapping[str, Any]) -> RouteTable:
    """Rebuild a snapshot sent by :func:`routes_to_wire`.

    Raises:
        EdgeConfigError: A bad app name or endpoint URL.
    """
    hosts = data.get("\x00hosts") or {}
    hold = set(data.get("\x00hold") or ())
    return RouteTable({app: Route(app, tuple(Endpoint(*ep) for ep in eps),
                                  tuple(hosts.get(app, ())), hold=app in hold)
                       for app, eps in data.items() if not app.startswith("\x00")})


class _Channel:
    """The worker's side of the pipe to its parent (writes from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._out = sys.stdout.buffer

    def send(self, message: Mapping[str, Any]) -> None:
        self.send_frame(orjson.dumps(message, default=str) + b"\n")

    def send_frame(self, *parts: bytes) -> None:
        with self._lock:
            try:
                for part in parts:
                    self._out.write(part)
                self._out.flush()
            except (BrokenPipeError, ValueError):
                pass  # the parent is gone; stdin's EOF stops us


class _HoldGate:
    """Held requests ask the parent for their place (see :mod:`mycelium.edge.hold`)."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def ask(self, app: str, ticket: int) -> None:
        self._channel.send({"hold": [app, ticket]})

    def leave(self, app: str, ticket: int) -> None:
        self._channel.send({"unhold": [app, ticket]})


class _AccessSink:
    """Access log lines go to the parent, framed: a header line, then the bytes."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def write_lines(self, line: bytes) -> None:
        self._channel.send_frame(b'{"access_bytes":%d}\n' % len(line), line)

    def close(self) -> None:
        """Nothing to close: the pipe is the process's stdout."""


def _report(channel: _Channel) -> Any:
    def report(rep: Report) -> None:
        channel.send({"report": {"ts": rep.ts, "event": rep.event, "supervisor": rep.supervisor,
                                 "child": rep.child, "reason": rep.reason, "delay": rep.delay,
                                 "extra": dict(rep.extra)}})
    return report


def main() -> int:
    """Serve until SIGTERM or the parent closes stdin; returns the exit code."""
    from mycelium.edge.server import EdgeServer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the mesh's Ctrl-C is the mesh's to handle
    first = sys.stdin.buffer.readline()
    if not first:
        return 0
    hello = orjson.loads(first)
    channel = _Channel()
    config = dataclasses.replace(config_from_wire(hello["config"]), reuse_port=True, workers=0,
                                 hold_gate=_HoldGate(channel))
    def outcome(app: str, ep: Endpoint, ok: bool, total: int) -> None:
        channel.send({"outcome": [app, ep.url, ep.instance, ok, total]})

    server = EdgeServer(config, _report(channel), _AccessSink(channel), outcome)
    version = -1
    snapshot = hello.get("snapshot")
    if snapshot:  # a restarted worker must not answer 404 for the routes the others serve
        version = snapshot["version"]
        server.set_routes(routes_from_wire(snapshot["routes"]))
        server.set_restarts(snapshot.get("restarts", {}))
    server.start()
    channel.send({"listening": server.port, "pid": os.getpid()})
    if version >= 0:
        channel.send({"applied": version})

    def read() -> None:
        nonlocal version
        for line in sys.stdin.buffer:
            message = orjson.loads(line)
            if "peers" in message:
                server.set_peer_metrics(message["peers"])
            elif "reload_certs" in message:
                try:
                    server.reload_certs()
                except Exception as exc:  # checked by the parent first: a race with an edit
                    _report(channel)(Report(ts=time.time(), event="certs_reload_failed",
                                            supervisor="mesh/edge", child="edge",
                                            reason=str(exc)))
                channel.send({"certs": message["reload_certs"]})
            elif "admit" in message:
                ticket, admitted = message["admit"]
                server.answer_hold(int(ticket), bool(admitted))
            elif "ejections" in message:
                shared = message["ejections"]
                server.mirror_ejections(shared["failing"], shared["out"])
            elif message.get("version", -1) > version:
                version = message["version"]
                server.set_routes(routes_from_wire(message["routes"]))
                server.set_restarts(message.get("restarts", {}))
                channel.send({"applied": version})
        stop.set()  # the parent is gone

    threading.Thread(target=read, name="edge-worker-feed", daemon=True).start()
    while not stop.wait(METRICS_EVERY):
        with contextlib.suppress(Exception):  # a busy loop skips a report, never the worker
            channel.send({"metrics": server.metrics_snapshot()})
            channel.send({"answers": [[a.app, a.digest, a.answered, a.errors]  # a canary's
                                      for a in server.answer_counts()]})
    server.stop(grace=_STOP_GRACE)
    return 0


if __name__ == "__main__":
    code = main()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(code)  # the stdin reader may still block in read(): skip the interpreter's teardown
