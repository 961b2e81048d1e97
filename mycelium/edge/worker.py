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

The worker stops, draining its requests, on SIGTERM. When its stdin closes (the mesh was
killed) it keeps serving its last routes, ejects failing endpoints by itself and waits on its
adoption socket for the next mesh of its home, which then talks to it over that socket with
the same messages (first ``{"adopt": config}``, answered ``{"adopted": {"pid", "listening",
"version", "snapshot"}}`` or ``{"refused": why}``); see :mod:`mycelium.edge.handover`. An
orphan nobody adopts within ``orphan_timeout`` seconds, or whose home is gone, exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import orjson
import psutil

from mycelium.edge.config import EdgeConfig
from mycelium.edge.ejection import EjectionPolicy, Ejector
from mycelium.edge.handover import WorkerRecord, orphan_should_exit, unix_address
from mycelium.edge.routes import Endpoint, Route, RouteTable
from mycelium.edge.tls import CertPair, TLSSettings
from supervisors.reports import Report

__all__ = ["config_from_wire", "config_to_wire", "routes_from_wire", "routes_to_wire"]

_STOP_GRACE = 5.0
METRICS_EVERY = 0.25
"""Seconds between two metrics reports of a worker to its parent."""
_KEEP_ACCESS = 1 << 20
"""Bytes of access log lines an orphaned worker keeps for the mesh that adopts it."""


def config_to_wire(config: EdgeConfig) -> dict[str, Any]:
    """The config as JSON-able data (paths as strings)."""
    # the parent's hooks stay out (asdict would deep-copy what they are bound to)
    data = dataclasses.asdict(dataclasses.replace(config, on_wake=None, on_handover=None,
                                                  hold_gate=None))
    for hook in ("on_wake", "on_handover", "hold_gate"):  # a worker's held requests ask it
        data.pop(hook, None)
    for key in ("access_log_home", "run_dir"):
        if data[key] is not None:
            data[key] = str(data[key])
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
    for key in ("access_log_home", "run_dir"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
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
    """The worker's side of the link to its supervisor (writes from any thread).

    At first the link is the process's stdout (the parent's pipe); once that parent is gone
    it is detached (what is sent meanwhile is dropped, access log lines kept up to
    :data:`_KEEP_ACCESS` bytes), and an adopting mesh attaches its socket.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._out: IO[bytes] | None = sys.stdout.buffer
        self._kept: list[bytes] = []
        self._kept_bytes = 0

    @property
    def attached(self) -> bool:
        """Whether a supervisor listens."""
        return self._out is not None

    def attach(self, out: IO[bytes], first: bytes) -> None:
        """Talk to a new supervisor: ``first`` (its answer), then the kept access lines."""
        with self._lock:
            self._out = out
            kept, self._kept, self._kept_bytes = self._kept, [], 0
        self.send_frame(first)
        for data in kept:
            self.send_frame(b'{"access_bytes":%d}\n' % len(data), data)

    def detach(self, out: IO[bytes]) -> bool:
        """The supervisor on ``out`` is gone; False if another one has attached since."""
        with self._lock:
            if self._out is not out:
                return False
            self._out = None
            return True

    @property
    def out(self) -> IO[bytes] | None:
        """Where messages go now."""
        return self._out

    def send(self, message: Mapping[str, Any]) -> None:
        self.send_frame(orjson.dumps(message, default=str) + b"\n")

    def send_frame(self, *parts: bytes) -> None:
        with self._lock:
            out = self._out
            if out is None:
                return
            try:
                for part in parts:
                    out.write(part)
                out.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the supervisor is gone; its end of the link says so to the reader

    def keep(self, data: bytes) -> None:
        """Keep access log lines written while detached (bounded; beyond it they are lost)."""
        with self._lock:
            if self._out is None and self._kept_bytes + len(data) <= _KEEP_ACCESS:
                self._kept.append(data)
                self._kept_bytes += len(data)


class _HoldGate:
    """Held requests ask the parent for their place (see :mod:`mycelium.edge.hold`); with
    no mesh nobody can wake the app, so the answer is no, at once."""

    def __init__(self, channel: _Channel, refuse: Callable[[int], None]) -> None:
        self._channel = channel
        self._refuse = refuse

    def ask(self, app: str, ticket: int) -> None:
        if not self._channel.attached:
            self._refuse(ticket)
            return
        self._channel.send({"hold": [app, ticket]})

    def leave(self, app: str, ticket: int) -> None:
        self._channel.send({"unhold": [app, ticket]})


class _AccessSink:
    """Access log lines go to the supervisor, framed: a header line, then the bytes."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def write_lines(self, line: bytes) -> None:
        if self._channel.attached:
            self._channel.send_frame(b'{"access_bytes":%d}\n' % len(line), line)
        else:
            self._channel.keep(line)

    def close(self) -> None:
        """Nothing to close: the link is the channel's."""


def _report(channel: _Channel) -> Any:
    def report(rep: Report) -> None:
        channel.send({"report": {"ts": rep.ts, "event": rep.event, "supervisor": rep.supervisor,
                                 "child": rep.child, "reason": rep.reason, "delay": rep.delay,
                                 "extra": dict(rep.extra)}})
    return report


def _same_config(wanted: Any, mine: Mapping[str, Any]) -> bool:
    """Whether an adopter's config is ours (its worker count aside: a slot is a slot)."""
    return isinstance(wanted, dict) and {k: v for k, v in wanted.items() if k != "workers"} \
        == {k: v for k, v in mine.items() if k != "workers"}


class _Worker:
    """The worker's state between its feeds: the server, the snapshot version, the orphan
    clock and, while orphaned, its own ejector."""

    def __init__(self, hello: Mapping[str, Any], stop: threading.Event) -> None:
        from mycelium.edge.server import EdgeServer

        self.wire_config = hello["config"]
        self.channel = _Channel()
        config = dataclasses.replace(
            config_from_wire(self.wire_config), reuse_port=True, workers=0,
            hold_gate=_HoldGate(self.channel, lambda t: self.server.answer_hold(t, False)))
        self.config = config
        self.stop = stop
        self.server = EdgeServer(config, _report(self.channel), _AccessSink(self.channel),
                                 self._outcome)
        self.version = -1
        self.snapshot: dict[str, Any] | None = None
        self.orphaned_at: float | None = None
        self._lock = threading.Lock()
        self._ejector = Ejector(EjectionPolicy(config.eject_after, config.eject_time,
                                               config.eject_max))
        self.run_dir = Path(config.run_dir) if config.run_dir is not None else None
        self.record: WorkerRecord | None = None
        self.parent = os.getppid()
        snapshot = hello.get("snapshot")
        if snapshot:  # a restarted worker must not answer 404 for the routes the others serve
            self._apply(snapshot)

    def _outcome(self, app: str, ep: Endpoint, ok: bool, total: int) -> None:
        if self.channel.attached:
            self.channel.send({"outcome": [app, ep.url, ep.instance, ok, total]})
            return
        with self._lock:  # orphaned: nobody decides for us, so we eject on our own
            if self._ejector.outcome(app, ep, ok, total, time.monotonic()) is not None:
                self.server.mirror_ejections(*self._ejector.shared())

    def tick(self) -> None:
        """Every ``METRICS_EVERY``: report, or (orphaned) return ejected endpoints in time."""
        if self.channel.attached:
            self.channel.send({"metrics": self.server.metrics_snapshot()})
            self.channel.send({"answers": [[a.app, a.digest, a.answered, a.errors]  # canary's
                                           for a in self.server.answer_counts()]})
            return
        with self._lock:
            if self._ejector.release(time.monotonic()):
                self.server.mirror_ejections(*self._ejector.shared())

    def _apply(self, snapshot: Mapping[str, Any]) -> None:
        self.version = int(snapshot["version"])
        self.snapshot = dict(snapshot)
        table = routes_from_wire(snapshot["routes"])
        self.server.set_routes(table)
        self.server.set_restarts(snapshot.get("restarts", {}))
        with self._lock:
            self._ejector.forget({ep.url for route in table.values() for ep in route.endpoints})

    def handle(self, message: Mapping[str, Any]) -> None:
        """One message of the supervisor."""
        if "peers" in message:
            self.server.set_peer_metrics(message["peers"])
        elif "reload_certs" in message:
            try:
                self.server.reload_certs()
            except Exception as exc:  # checked by the parent first: a race with an edit
                _report(self.channel)(Report(ts=time.time(), event="certs_reload_failed",
                                             supervisor="mesh/edge", child="edge",
                                             reason=str(exc)))
            self.channel.send({"certs": message["reload_certs"]})
        elif "admit" in message:
            ticket, admitted = message["admit"]
            self.server.answer_hold(int(ticket), bool(admitted))
        elif "ejections" in message:
            shared = message["ejections"]
            with self._lock:
                self._ejector.mirror(shared["failing"], shared["out"])
            self.server.mirror_ejections(shared["failing"], shared["out"])
        elif message.get("version", -1) > self.version:
            self._apply(message)
            self.channel.send({"applied": self.version})

    def feed(self, source: IO[bytes], out: IO[bytes] | None) -> None:
        """Follow one supervisor's messages until its end of the link closes (``out``: its
        end for our messages)."""
        for line in source:
            with contextlib.suppress(orjson.JSONDecodeError):
                self.handle(orjson.loads(line))
        if out is None or not self.channel.detach(out):
            return  # a new supervisor adopted us meanwhile: it is not gone
        self.orphaned_at = time.monotonic()
        with self._lock:  # the mesh's ejections end with it: we decide from here on
            self._ejector = Ejector(self._ejector.policy)
            self.server.mirror_ejections({}, {})

    def should_exit(self) -> bool:
        """Orphaned too long, or the home is gone."""
        return orphan_should_exit(time.monotonic(), self.orphaned_at, self.config.orphan_timeout,
                                  self.run_dir is None or self.run_dir.is_dir())

    # -- adoption ---------------------------------------------------------------------------
    def listen_for_adopters(self) -> None:
        """Write our record and serve the adoption socket (no run dir: never adopted)."""
        run_dir = self.run_dir
        if run_dir is None:
            return
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pid = os.getpid()
        path = WorkerRecord.socket_path(run_dir, pid)
        with contextlib.suppress(OSError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with unix_address(path) as address:
            sock.bind(address)
        os.chmod(path, 0o600)
        sock.listen(4)
        self.record = WorkerRecord(pid, psutil.Process(pid).create_time(), str(path),
                                   self.server.port)
        self.record.write(run_dir)
        threading.Thread(target=self._accept, args=(sock,), name="edge-worker-adopt",
                         daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                self._adopted_by(conn)
            except Exception as exc:  # a broken adopter costs its attempt, never the worker
                sys.stderr.write(f"edge worker: adoption failed: {exc}\n")
            finally:
                conn.close()

    def _adopted_by(self, conn: socket.socket) -> None:
        """One mesh asks to adopt us: agree (same config, orphaned) and follow it until it
        is gone too, or refuse."""
        conn.settimeout(10.0)
        source = conn.makefile("rb")
        first = source.readline()
        if not first:
            return
        wanted = orjson.loads(first).get("adopt")
        refusal = None
        if self.channel.attached and os.getppid() == self.parent:
            refusal = "it has a mesh"  # (reparented: its mesh died, the EOF is on its way)
        elif not _same_config(wanted, self.wire_config):
            refusal = "its config differs"
        if refusal is not None:
            conn.sendall(orjson.dumps({"refused": refusal}) + b"\n")
            return
        conn.settimeout(None)
        self.orphaned_at = None
        out = conn.makefile("wb")
        self.channel.attach(out, orjson.dumps({"adopted": {
            "pid": os.getpid(), "listening": self.server.port, "version": self.version,
            "snapshot": self.snapshot}}) + b"\n")
        self.feed(source, out)

    def forget(self) -> None:
        """Remove our record and socket (we are exiting)."""
        if self.record is not None and self.run_dir is not None:
            self.record.forget(self.run_dir)


def main() -> int:
    """Serve until SIGTERM, or until orphaned too long; returns the exit code."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the mesh's Ctrl-C is the mesh's to handle
    first = sys.stdin.buffer.readline()
    if not first:
        return 0
    worker = _Worker(orjson.loads(first), stop)
    worker.server.start()
    worker.listen_for_adopters()
    worker.channel.send({"listening": worker.server.port, "pid": os.getpid()})
    if worker.version >= 0:
        worker.channel.send({"applied": worker.version})
    threading.Thread(target=worker.feed, args=(sys.stdin.buffer, worker.channel.out),
                     name="edge-worker-feed", daemon=True).start()
    try:
        while not stop.wait(METRICS_EVERY):
            if worker.should_exit():
                break
            with contextlib.suppress(Exception):  # a busy loop skips a report, never the worker
                worker.tick()
        worker.server.stop(grace=_STOP_GRACE)
    finally:
        worker.forget()
    return 0


if __name__ == "__main__":
    code = main()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(code)  # the stdin reader may still block in read(): skip the interpreter's teardown
