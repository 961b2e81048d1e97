"""The edge's worker processes: started, fed, watched and restarted by the edge actor.

The proxy runs in ``[edge] workers`` OS processes (``python -m mycelium.edge.worker``) that
share the edge port with ``SO_REUSEPORT``: each binds its own listening socket and the kernel
spreads new connections over them; chosen over one inherited listening socket because each
worker then has its own accept queue (no thundering herd) and a restarted worker needs nothing
from its parent but its config. The pool first binds (without listening) a socket of its own
to the port, which reserves it and makes ``port = 0`` pick one port for all.

Every routing snapshot gets a version and is written to every worker's stdin; a worker
answers with the version it applied, so the pool knows which workers serve which snapshot. A
worker that dies is reported (``child_terminated``), restarted after a short growing delay
and fed the latest snapshot (``child_restarted``); the others keep serving meanwhile.

Workers outlive a killed mesh: a pool with ``run_dir`` first adopts the orphans a killed mesh
of its home left (:mod:`mycelium.edge.adoption`; ``child_adopted``) and serves their last
snapshot beside its own routes until its own instances take over (:mod:`.handover`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

import orjson

from mycelium._logger import get_logger
from mycelium.edge.adoption import AdoptedWorker, Takeover
from mycelium.edge.answers import sum_answers
from mycelium.edge.config import ACCESS_LOG_NAME, EdgeConfig
from mycelium.edge.ejection import EjectionEvent, EjectionPolicy, Ejector
from mycelium.edge.errors import EdgeError
from mycelium.edge.handover import worker_stderr
from mycelium.edge.hold import HoldLedger
from mycelium.edge.metrics import Snapshot, combine, counters_only
from mycelium.edge.poolreports import exit_reason, report_from_wire, restart_delay
from mycelium.edge.pushclock import PushClock
from mycelium.edge.routes import Endpoint, RouteTable
from mycelium.edge.slots import WorkerSlot, hold_port, wire_config, worker_env
from mycelium.edge.tls import CertStore
from mycelium.edge.worker import routes_to_wire
from mycelium.operator.logs import SupervisionLog
from mycelium.priority import data_plane_priority
from mycelium.rollout_messages import DigestAnswers
from supervisors.reports import Report, Reporter

__all__ = ["EdgeWorkers", "restart_delay"]

log = get_logger(__name__)

RELOAD_WAIT = 5.0
"""Seconds a certificate reload waits for every worker to confirm it."""

SUPERVISOR = "mesh/edge"
"""The ``supervisor`` of the workers' supervision-log records: the edge actor's path."""


class EdgeWorkers:
    """N edge worker processes on one port.

    Args:
        config: The edge's settings (``config.workers`` processes are started).
        reporter: Receives the workers' supervision-log records (their ejections, their
            terminations and restarts); ``None`` drops them.
    """

    def __init__(self, config: EdgeConfig, reporter: Reporter | None = None) -> None:
        if config.workers < 1:
            raise EdgeError("EdgeWorkers needs [edge] workers >= 1")
        self.config = config
        self._reporter = reporter
        self._workers = [WorkerSlot(i) for i in range(1, config.workers + 1)]
        self._lock = threading.Lock()
        self._holder: socket.socket | None = None
        self._tls_holder: socket.socket | None = None
        self._tls_port: int | None = None
        self._port: int | None = None
        self._routes = RouteTable()
        self._restarts: dict[str, int] = {}
        self._version = 0
        self._certs = 0  # certificate reloads asked so far
        self._pushes = PushClock()
        self._snapshot = b""
        self._snapshot_data: dict[str, Any] | None = None
        self._stopping = False
        self._applied = threading.Condition(self._lock)
        self._latest: dict[int, Snapshot] = {}  # worker index → its last metrics
        self._answers: dict[int, list[list[Any]]] = {}  # worker index → its per-digest answers
        self._retired: Snapshot = {}  # counters of workers that exited
        self._ejector = Ejector(EjectionPolicy(config.eject_after, config.eject_time,
                                               config.eject_max))
        self._ejections: dict[str, int] = {}  # app → ejections so far (the metric)
        self._holds = HoldLedger(config.hold_max)  # held requests over every worker
        self._takeover = Takeover(config.run_dir, config.on_handover)  # of a killed mesh's
        self._access: SupervisionLog | None = None
        if config.access_log_home is not None:  # the workers' lines, written here: one file
            self._access = SupervisionLog(config.access_log_home, config.access_rotate_bytes,
                                          config.access_keep, name=ACCESS_LOG_NAME)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Reserve the port, start every worker, return once all of them listen.

        Raises:
            EdgeError: The port cannot be bound, or a worker did not start in time.
        """
        tls = self.config.tls
        if tls is not None:
            CertStore(tls.pairs)  # a bad pair fails here, before any worker starts
        holder = hold_port(self.config.host, self.config.port)
        self._holder = holder
        self._port = holder.getsockname()[1]
        if tls is not None:
            try:
                self._tls_holder = hold_port(self.config.host, tls.port)
            except EdgeError:
                self.stop(grace=0.0)
                raise
            self._tls_port = self._tls_holder.getsockname()[1]
        self._adopt_orphans()
        for worker in self._workers:
            if worker.proc is None:
                self._spawn(worker)
        threading.Thread(target=self._release_ejections, name="edge-ejections",
                         daemon=True).start()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            if not worker.listening.wait(max(0.0, deadline - time.monotonic())):
                self.stop(grace=1.0)
                raise EdgeError(f"edge {worker.id} did not start within {timeout} s")
        self._takeover.started(self.wait_applied)

    # -- adoption ---------------------------------------------------------------------------
    def _wire_config(self) -> dict[str, Any]:
        return wire_config(self.config, self._port, self._tls_port)

    def _adopt_orphans(self) -> None:
        """Adopt the workers a killed mesh of this home left serving (see
        :mod:`mycelium.edge.handover`); they serve its last snapshot until ours take over."""
        free = [w for w in self._workers if w.proc is None]
        adopted = self._takeover.adopt(self._wire_config(), len(free), self.config.port != 0)
        for (record, proc, answer), worker in zip(adopted, free, strict=False):
            worker.adopt(proc, record.create_time, int(answer.get("version", -1)))
            self._report("child_adopted", worker.id, "left serving by a killed mesh",
                         pid=record.pid)
            assert proc.stdout is not None
            threading.Thread(target=self._read, args=(worker, proc, proc.stdout),
                             name=f"edge-{worker.id}", daemon=True).start()
        if self._takeover.legacy:  # a slot started now serves the legacy routes at once
            self._snapshot_data = self._takeover.legacy.snapshot()
            self._version = int(self._snapshot_data["version"])

    def _spawn(self, worker: WorkerSlot) -> None:
        """Start ``worker``'s process and reader thread (no lock: a slot's respawns are its own)."""
        with worker_stderr(self.config.run_dir) as stderr, data_plane_priority():
            proc = subprocess.Popen(  # the run dir names it (see `ps`); the mesh's first nice
                [sys.executable, "-m", "mycelium.edge.worker", str(self.config.run_dir or "")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=worker_env(),
                start_new_session=True)
        assert proc.stdin is not None and proc.stdout is not None
        worker.proc = proc
        worker.listening.clear()
        worker.applied = -1
        worker.certs = self._certs  # it reads the pairs as they are now
        worker.status = "starting"
        worker.started_at = time.time()
        config = self._wire_config()
        with self._lock:  # the latest snapshot rides along: it serves no request without it
            self._write(proc.stdin, orjson.dumps({"config": config,
                                                  "snapshot": self._snapshot_data}) + b"\n")
        threading.Thread(target=self._read, args=(worker, proc, proc.stdout),
                         name=f"edge-{worker.id}", daemon=True).start()

    def _read(self, worker: WorkerSlot, proc: subprocess.Popen[bytes] | AdoptedWorker,
              out: IO[bytes]) -> None:
        """Follow one worker's messages; when it dies, report and restart it."""
        for line in out:
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if "listening" in message:
                worker.status = "running"
                worker.failures = 0
                worker.listening.set()
            elif "applied" in message:
                with self._lock:
                    worker.applied = int(message["applied"])
                    running = [w.applied for w in self._workers if w.status == "running"]
                    if running:
                        self._pushes.served(min(running), time.monotonic())
                    self._applied.notify_all()
            elif "certs" in message:
                with self._lock:
                    worker.certs = int(message["certs"])
                    self._applied.notify_all()
            elif "report" in message:
                self._report_dict(message["report"])
            elif "metrics" in message:
                self._metrics(worker, message["metrics"])
            elif "answers" in message:
                with self._lock:
                    self._answers[worker.index] = message["answers"]
            elif "hold" in message:
                self._hold_asked(worker, proc, *message["hold"])
            elif "unhold" in message:
                app, ticket = message["unhold"]
                with self._lock:
                    self._holds.leave(worker.index, str(app), int(ticket))
            elif "outcome" in message:
                self._outcome(*message["outcome"])
            elif "access_bytes" in message:
                data = out.read(int(message["access_bytes"]))
                if self._access is not None:
                    with contextlib.suppress(Exception):  # a full disk costs log lines
                        self._access.write_lines(data)
        code = proc.wait()
        with self._lock:  # what it counted still counts; its gauges are gone with it
            self._holds.forget(worker.index)
            self._retired = combine(self._retired, counters_only(self._latest.pop(worker.index,
                                                                                 {})))
        worker.status = "stopped" if self._stopping else "restarting"
        with self._lock:
            self._applied.notify_all()
        if self._stopping:
            return
        reason = exit_reason(code)
        self._report("child_terminated", worker.id, reason, pid=proc.pid)
        worker.failures += 1
        time.sleep(restart_delay(worker.failures))  # this slot's own thread: nobody waits on it
        if self._stopping:
            return
        worker.restarts += 1
        self._spawn(worker)
        if worker.proc is not None:
            self._report("child_restarted", worker.id, reason, pid=worker.proc.pid,
                         restarts=worker.restarts)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every worker (they drain), SIGKILL what is left after ``grace``; idempotent."""
        self._stopping = True
        procs = [w.proc for w in self._workers if w.proc is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5.0)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        for holder in (self._holder, self._tls_holder):
            if holder is not None:
                holder.close()
        self._holder = self._tls_holder = None
        if self._access is not None:
            self._access.close()

    # -- state pushed by the owner ------------------------------------------------------------
    def reload_certs(self) -> None:
        """Check the certificate pairs, then have every worker re-read them.

        Raises:
            TLSConfigError: A pair is bad now (no worker is told; the old ones stay in use).
            EdgeError: This edge has no TLS listener.
        """
        tls = self.config.tls
        if tls is None:
            raise EdgeError("the edge has no TLS listener (up --tls-cert … --tls-key …)")
        CertStore(tls.pairs)
        deadline = time.monotonic() + RELOAD_WAIT
        with self._lock:
            self._certs += 1
            line = orjson.dumps({"reload_certs": self._certs}) + b"\n"
            for worker in self._workers:
                if worker.proc is not None and worker.proc.stdin is not None:
                    self._write(worker.proc.stdin, line)
            # back once every running worker uses them: the next handshake gets the new ones
            while any(w.status == "running" and w.certs < self._certs for w in self._workers):
                left = deadline - time.monotonic()
                if left <= 0:
                    break  # a stuck worker: the supervisor's business, not the caller's
                self._applied.wait(left)

    @property
    def tls_port(self) -> int | None:
        """The TLS port the workers share, or None without TLS."""
        return self._tls_port

    def set_restarts(self, restarts: Mapping[str, int]) -> None:
        """Replace the per-app restart counts; they go out with the next snapshot."""
        with self._lock:
            self._restarts = dict(restarts)

    def set_routes(self, table: RouteTable) -> int:
        """Send a new routing snapshot to every worker; returns its version."""
        with self._lock:
            self._routes = table
            return self._push(table)

    def _push(self, table: RouteTable) -> int:
        """Send ``table`` with the legacy routes a killed mesh's workers still need merged in
        (lock held; :mod:`.handover`); hand over once none is left."""
        sent, handed = self._takeover.legacy.push(table, time.monotonic())
        self._version += 1
        self._snapshot_data = {"version": self._version, "routes": routes_to_wire(sent),
                               "restarts": self._restarts}
        self._snapshot = orjson.dumps(self._snapshot_data) + b"\n"
        self._ejector.forget({ep.url for route in sent.values() for ep in route.endpoints})
        for worker in self._workers:
            if worker.proc is not None and worker.proc.stdin is not None:
                self._write(worker.proc.stdin, self._snapshot)
        self._pushes.sent(self._version, time.monotonic(), frozenset(
            ep.url for route in sent.values() for ep in route.endpoints))
        self._share_ejections()
        if handed is not None:
            self._takeover.hand_over(handed, self._version, self.wait_applied)
        return self._version

    def may_route(self, url: str) -> bool:
        """Whether some running worker may still route to ``url`` (a draining instance waits
        until none does)."""
        with self._lock:
            return self._pushes.may_route(url)

    def push_seconds(self) -> list[float]:
        """Seconds from sending each recent snapshot until every running worker applied it:
        how fast a route change reaches the whole edge (:class:`PushClock`)."""
        with self._lock:
            return self._pushes.seconds()

    def wait_applied(self, version: int, timeout: float) -> bool:
        """Wait until every running worker applied ``version`` (or a later one)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(w.status == "running" and w.applied < version for w in self._workers):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._applied.wait(left)
            return True

    def answer_counts(self) -> tuple[DigestAnswers, ...]:
        """Per-digest answers over the last window, summed over the workers (a canary's)."""
        with self._lock:
            return sum_answers(list(self._answers.values()))

    def _metrics(self, worker: WorkerSlot, snap: Snapshot) -> None:
        """Keep a worker's metrics; send every worker the sum of the others' (and the
        retired workers')."""
        with self._lock:
            self._latest[worker.index] = snap
            total = self._retired
            for latest in self._latest.values():
                total = combine(total, latest)
            for other in self._workers:
                if other.proc is None or other.proc.stdin is None or other.status != "running":
                    continue
                peers = combine(combine(total, self._latest.get(other.index, {}), -1),
                                {"ejections": self._ejections})
                self._write(other.proc.stdin, orjson.dumps({"peers": peers}) + b"\n")

    # -- held requests, counted here for every worker -------------------------------------
    def _hold_asked(self, worker: WorkerSlot, proc: subprocess.Popen[bytes] | AdoptedWorker,
                    app: str, ticket: int) -> None:
        """A worker's request for a sleeping app wants to wait: admit it (or not), and wake
        the app for the first request of a wave."""
        with self._lock:  # every write to a worker's stdin holds the lock: whole lines
            admitted, wake = self._holds.ask(worker.index, str(app), int(ticket))
            if proc.stdin is not None:
                self._write(proc.stdin, orjson.dumps({"admit": [ticket, admitted]}) + b"\n")
        if wake and self.config.on_wake is not None:
            self.config.on_wake(str(app))

    def load_totals(self) -> dict[str, tuple[int, float]]:
        """app → (requests, upstream seconds) so far, over every worker (their last metrics,
        at most ``METRICS_EVERY`` old; :class:`~mycelium.edge.load.LoadMeter`)."""
        return {app: (int(h[-1]), float(h[-2]))
                for app, h in self.metrics().get("hist", {}).items() if len(h) >= 2}

    # -- ejection, decided here for every worker -----------------------------------------
    def _outcome(self, app: str, url: str, instance: str, ok: bool, total: int) -> None:
        """A worker's outcome: count it once for the whole edge, share what changed."""
        with self._lock:
            try:
                ep = Endpoint(url, instance)
            except EdgeError:
                return
            event = self._ejector.outcome(app, ep, bool(ok), int(total), time.monotonic())
            self._share_ejections()
        if event is not None:
            self._announce(event)

    def _release_ejections(self) -> None:
        """Return ejected endpoints on time (a tenth of a second late at most)."""
        while not self._stopping:
            time.sleep(0.1)  # the pool's own timer thread; nothing waits on it
            with self._lock:
                if self._takeover.legacy.expired(time.monotonic()):
                    self._push(self._routes)  # waited long enough for our own instances
                events = self._ejector.release(time.monotonic())
                if events:
                    self._share_ejections()
            for event in events:
                self._announce(event)

    def _share_ejections(self) -> None:
        """Send every worker the failure counts and the ejected endpoints (lock held)."""
        failing, out = self._ejector.shared()
        line = orjson.dumps({"ejections": {"failing": failing, "out": out}}) + b"\n"
        for worker in self._workers:
            if worker.proc is not None and worker.proc.stdin is not None:
                self._write(worker.proc.stdin, line)

    def _announce(self, event: EjectionEvent) -> None:
        if event.event == "endpoint_ejected":
            with self._lock:
                self._ejections[event.app] = self._ejections.get(event.app, 0) + 1
            reason = (f"{self.config.eject_after} consecutive failures; out for "
                      f"{event.seconds:g} s (ejection {event.count})")
        else:
            reason = "ejection over"
        self._report(event.event, event.instance or event.url, reason, app=event.app,
                     instance=event.instance or None, url=event.url, count=event.count,
                     seconds=event.seconds)

    def metrics(self) -> Snapshot:
        """Every worker's metrics summed, the exited ones' counters included."""
        with self._lock:
            total = combine(self._retired, {"ejections": self._ejections})
            for latest in self._latest.values():
                total = combine(total, latest)
            return total

    @staticmethod
    def _write(pipe: IO[bytes], data: bytes) -> None:
        try:
            pipe.write(data)
            pipe.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the worker is dying: its reader thread restarts it and feeds it again

    def kill_one(self, sig: int = signal.SIGKILL) -> int:
        """Signal one running worker (crash testing); returns its pid.

        Raises:
            EdgeError: No worker is running.
        """
        running = [w.proc for w in self._workers if w.status == "running" and w.proc]
        if not running:
            raise EdgeError("no edge worker is running")
        running[0].send_signal(sig)
        return running[0].pid

    # -- views ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The shared port.

        Raises:
            EdgeError: Not started.
        """
        if self._port is None:
            raise EdgeError("edge workers not started")
        return self._port

    @property
    def routes(self) -> RouteTable:
        """The latest routing snapshot sent."""
        return self._routes

    def describe(self) -> list[dict[str, Any]]:
        """Each worker as a tree node: ``{id, type: "worker", pid, status, restarts, ...}``."""
        return [w.describe() for w in self._workers]

    # -- reports ------------------------------------------------------------------------------
    def _report(self, event: str, child: str, reason: str | None, **extra: Any) -> None:
        if self._reporter is not None:
            self._reporter(Report(ts=time.time(), event=event, supervisor=SUPERVISOR,
                                  child=child, reason=reason, extra=extra))

    def _report_dict(self, data: dict[str, Any]) -> None:
        report = report_from_wire(data)  # a worker's malformed report costs the report
        if self._reporter is not None and report is not None:
            self._reporter(report)
