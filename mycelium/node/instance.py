"""AppInstance: the supervised actor that owns ONE workload OS process (Flows B, E).

Idle → Launching → Ready → Draining → Stopped. Everything that blocks — extracting the spore,
spawning, probing health until the first 200 — runs as tasks on the launch pool (not in the
actor's turn) that reports back by message, so the mailbox always answers (a ``stop`` or a
``Drain`` is never stuck behind a probe). The exit of the process is noticed at once (the
reaper's callback tells the actor); the actor then leaves the routes first and fails with the
exit as its ``reason``, so its supervisor starts a replacement from the same digest (backoff).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mycelium._logger import get_logger
from mycelium.fabric.names import Names
from mycelium.messages import (
    CheckReport,
    Crash,
    CrashRequested,
    DeregisterEndpoint,
    Drain,
    GetInfo,
    InstanceInfo,
    InstanceStatus,
    LastExit,
    RegisterEndpoint,
    Resync,
    to_wire,
)
from mycelium.node.containment import Jail, stop_jail
from mycelium.node.isolation import Isolation
from mycelium.node.process import Workload
from mycelium.node.sandboxed import InstanceSandbox
from mycelium.secrets.redact import redact_report
from mycelium.states import LIVE_STATES, InstanceState
from supervisors import Latch, SupervisedActor
from supervisors.pool import WorkerPool
from supervisors.singleton import Singleton
from supervisors.timers import TimerHandle, shared_timers

from . import credentials
from .checks import CheckEngine, engine_for, report_changes
from .execgate import EXEC_GATE
from .launch import Launching, exit_reason, spawn_retrying, workload_port
from .output import Capture, OutputPolicy, rfc3339
from .prober import shared_prober
from .sweeper import sweep_later

__all__ = ["RECORD_FILE", "AppInstance", "InstanceFailed", "InstanceSpec"]

log = get_logger(__name__)

RECORD_FILE = "process.json"
"""Each instance directory holds its workload's ProcessRecord while the workload runs."""

# Launch work (extract, spawn) runs on a small bounded pool of its own, not on the actors'
# cached pool: it waits on nothing but the OS, and in a mass start more threads would only fight
# over the cores. Every probe is a non-blocking socket in the prober's thread (node/prober.py;
# exec checks: node/checks.py): blocking probers made ~7,000 context switches/s at 300 workloads.
_LAUNCHES = Singleton(lambda: WorkerPool(max_workers=8, keep_idle=1, name="mycelium-launch"))
_CHECK_SLACK = 0.05


_LAUNCHING = Launching()


class InstanceFailed(Exception):
    """The instance's workload died or broke its budget; ``reason`` goes into the report."""

    def __init__(self, reason: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = dict(details or {})


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSpec:
    """Everything an instance needs, fixed when the agent adds the child (survives restarts).

    ``extract`` turns (spore, destination directory) into the binary's path, verifying first.
    The timings have no defaults here: they come from the node's settings
    (:class:`~mycelium.node.settings.NodeSettings`, from the config): one place for each.
    """

    app: str
    node: str
    digest: str
    child: str
    spore: Path
    extract: Callable[[Path, Path], Path]
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    health: str = "/health"
    mem_mb: int
    cpu: float | None = None  # the budget's cores: the cgroup's cpu.max, where it has one
    startup_timeout: float
    probe_interval: float
    health_interval: float
    health_timeout: float
    health_failures: int
    sample_interval: float
    stop_grace: float
    host: str
    instances_dir: Path
    output: OutputPolicy
    checks: tuple[Any, ...] = ()  # the manifest's CheckSpecs; none: GET <health> as before
    exec_parallel: int = 4
    isolation: Isolation | None = None  # uid, built env, limits, containment (None: as the mesh)
    extra_env: Mapping[str, str] = field(default_factory=dict)  # after the manifest's (secrets)
    credentials: Mapping[str, bytes] = field(default_factory=dict)  # $CREDENTIALS_DIRECTORY
    secrets: Callable[[str], Mapping[str, bytes]] | None = None  # opens them at each launch
    env_secrets: tuple[str, ...] = ()  # secret names also given as environment variables


# private messages of the actor to itself -----------------------------------------------------
# Off the wire on purpose: they report what this actor's own threads saw of its workload (one
# carries the live Workload handle); a message from outside must never pose as one.

@dataclass(frozen=True, slots=True)
class _Spawned:
    workload: Workload
    url: str


@dataclass(frozen=True, slots=True)
class _Healthy:
    pass


@dataclass(frozen=True, slots=True)
class _LaunchFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class _Exited:
    returncode: int


@dataclass(frozen=True, slots=True)
class _Sampled:
    rss: int
    cpu: float


@dataclass(frozen=True, slots=True)
class _OverBudget:
    rss: int


@dataclass(frozen=True, slots=True)
class _Probed:
    ok: bool


class AppInstance(SupervisedActor):
    """One workload: launch, probe, serve, drain, stop.

    Args:
        spec: The instance's fixed spec.
        names: The mesh's registered names (reports go to ``fabric`` and the node's agent).
        instance_id: ``<app>@<node>#<k>`` (``MYCELIUM_INSTANCE``; changes on every restart).
        restarts: How many times this slot was restarted (carried by the replacement).
        last_exit: How the instance this one replaces ended (``status`` shows it).
    """

    pooled = True  # hundreds of mostly idle instances: turns on the shared scheduler

    def __init__(self, spec: InstanceSpec, names: Names, instance_id: str, restarts: int,
                 last_exit: LastExit | None = None) -> None:
        super().__init__()
        self.spec = spec
        self._names = names
        self._workload: Workload | None = None
        self._closing = Latch()
        self._spawn_lock = threading.Lock()
        self._spawned: Workload | None = None
        self._failures = 0
        self._checks = 0
        self._probe_due = 0.0
        self._latest: tuple[int, float] | None = None  # the last sample's (rss, cpu)
        self._tick: TimerHandle | None = None
        self._engine: CheckEngine | None = None  # runs the manifest's checks, if it has any
        self._dir = spec.instances_dir / instance_id.replace("/", "_")
        self._box = InstanceSandbox(spec.isolation, self._dir)
        self._capture: Capture | None = None
        self.info = InstanceInfo(id=instance_id, app=spec.app, node=spec.node, digest=spec.digest,
                                 state=InstanceState.IDLE, child=spec.child, restarts=restarts,
                                 started_at=time.time(), last_exit=last_exit)

    # -- lifecycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        """Go Launching and hand the blocking work to the launch pool (not this actor's turn)."""
        self._set(state=InstanceState.LAUNCHING)
        _LAUNCHES().submit(self._launch)

    def on_stop(self) -> None:
        """Graceful stop: leave the routes, SIGTERM the group, SIGKILL after the grace."""
        self._shutdown(self.spec.stop_grace, None)

    def on_failure(self, *_exc: object) -> None:
        """The actor failed: its process group is gone before the replacement starts; what left
        the group is swept after (:mod:`.sweeper`: the replacement needs none of it)."""
        self._shutdown(1.0, self.info.reason, later=True)

    def _shutdown(self, grace: float, reason: str | None, later: bool = False) -> None:
        with self._spawn_lock:
            self._closing.set()
            spawned, capture, engine = self._spawned, self._capture, self._engine
        if engine is not None:
            engine.close()
        if self._tick is not None:
            shared_timers().cancel(self._tick)
        if self.info.state in LIVE_STATES:
            self._set(state=InstanceState.DRAINING)
        workload = self._workload or spawned
        if workload is not None:
            workload.terminate(grace=grace, sweep=not later)
        if capture is not None:
            with contextlib.suppress(Exception):  # never let the record keep a stop from ending
                capture.close(reason or self.info.reason or "shutdown")
        with contextlib.suppress(OSError):
            (self._dir / RECORD_FILE).unlink()
        jail = None if workload is None else workload.jail
        if later:
            sweep_later(lambda: self._sweep(jail))
        else:
            self._sweep(None)  # terminate() swept the jail already
        self._set(state=InstanceState.STOPPED, reason=reason)

    def _sweep(self, jail: Jail | None) -> None:
        """Stop what left the group, then free the directories and the uid (in that order)."""
        if jail is not None and not stop_jail(jail, grace=0.5):
            log.warning("%s: processes of the instance still alive after SIGKILL", self.info.id)
        shutil.rmtree(self._dir / "app", ignore_errors=True)
        self._box.release()  # nothing of it runs any more: its directories and uid go

    # -- the launch tasks (on the launch pool) ------------------------------------------------

    def _launch(self) -> None:
        spec, ref = self.spec, self.actor_ref
        try:
            with EXEC_GATE.writing():  # never while a fork may copy its descriptor
                binary = spec.extract(spec.spore, self._box.root / "app")
            port = workload_port(spec.host)
            own = {"PORT": str(port), "MYCELIUM_APP": spec.app, "MYCELIUM_NODE": spec.node,
                   "MYCELIUM_DIGEST": spec.digest, "MYCELIUM_INSTANCE": self.info.id}
            with self._spawn_lock:  # either spawned before a stop, or never
                if self._closing.is_set():
                    return
                values = spec.secrets(spec.app) if spec.secrets is not None else {}
                self._capture = capture = Capture.of(self._dir, self.info.id, spec, values)
                env, confine = self._box.enter(
                    self.info.id, own, spec.env, {**spec.extra_env, **credentials.environment(
                        values, spec.env_secrets)}, {**spec.credentials, **values})
                self._engine = engine = engine_for(spec, self._box.root, lambda r: _tell(
                    ref, redact_report(r, values)))  # its words may quote a secret
                box = self._box.sandbox
                owner = None if box is None or box.uid is None or box.gid is None else (
                    box.uid, box.gid)
                env.update(engine.environment(owner) if engine is not None else {})
                workload = spawn_retrying([str(binary), *spec.args], self._box.root, env,
                                          capture.paths, confine, None if spec.isolation
                                          is None else spec.isolation.cgroups,
                                          (spec.mem_mb, spec.cpu))
                self._spawned = workload
        except Exception as exc:  # a bound notify socket is closed by the shutdown
            _tell(ref, _LaunchFailed(f"launch failed: {exc}"))
            return
        workload.record().write(self._dir / RECORD_FILE)
        url = f"http://{spec.host}:{port}"
        _tell(ref, _Spawned(workload, url))
        workload.on_exit(lambda rc: _tell(ref, _Exited(rc)))
        if engine is not None:  # the manifest's checks decide Ready, serving and restarts
            engine.start(workload.pid, workload.pgid, url, workload.env, self._box.root / "app",
                         *(() if confine is None else (confine.prefix, confine.umask)))
            return
        _LAUNCHING.enter()
        try:
            self._probe_startup(workload, url + spec.health,
                                time.monotonic() + spec.startup_timeout)
        except ValueError as exc:  # a health path that makes no URL
            _LAUNCHING.leave()
            _tell(ref, _LaunchFailed(f"launch failed: {exc}"))

    def _probe_startup(self, workload: Workload, health: str, deadline: float) -> None:
        """Ask the prober once (from the launch task, then from the shared timers)."""
        if self._closing.is_set() or workload.exited:
            _LAUNCHING.leave()
            return
        shared_prober().probe(health, 0.5,
                              lambda ok: self._startup_probed(ok, workload, health, deadline))

    def _startup_probed(self, ok: bool, workload: Workload, health: str,
                        deadline: float) -> None:
        """A startup probe's answer (in the prober's thread): Healthy, out of time, or again.

        Ends (and leaves ``_LAUNCHING``) on the first 200, the deadline, the workload's exit or
        a stop; otherwise the next probe is a timer, so nothing sleeps in between.
        """
        ref = self.actor_ref
        if self._closing.is_set() or workload.exited:
            _LAUNCHING.leave()
        elif ok:
            _LAUNCHING.leave()
            _tell(ref, _Healthy())
        elif time.monotonic() > deadline:
            _LAUNCHING.leave()
            _tell(ref, _LaunchFailed(f"not healthy within {self.spec.startup_timeout:g}s"))
        else:
            shared_timers().call_later(_LAUNCHING.interval(self.spec.probe_interval),
                                       lambda: self._probe_startup(workload, health, deadline))

    # -- messages --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Dispatch one message.

        Raises:
            InstanceFailed: the workload exited, failed its health checks or its memory budget.
            CrashRequested: on :class:`Crash`.
        """
        match message:
            case _Spawned(workload=workload, url=url):
                self._workload = workload
                self._set(pid=workload.pid, url=url, **self._box.fields())
            case _Healthy():
                if self.info.state == InstanceState.LAUNCHING:
                    self._set(state=InstanceState.READY, ready_at=time.time())
                    self._schedule()
            case _Exited(returncode=rc):
                if not self._closing.is_set():
                    self._fail(exit_reason(self._workload, rc), returncode=rc)
            case _LaunchFailed(reason=reason):
                if not self._closing.is_set():
                    self._fail(reason)
            case _Sampled(rss=rss, cpu=cpu):
                self.info = replace(self.info, rss_bytes=rss, cpu_percent=cpu)
                self._report()
            case _OverBudget(rss=rss):
                self._over_budget(rss)
            case _Probed(ok=ok):
                self._probed(ok)
            case CheckReport() if self._engine is not None and self._engine.latest(message):
                self._checked(message)
            case Drain():
                if self.info.state in LIVE_STATES:
                    self._set(state=InstanceState.DRAINING)
            case Resync():
                self._report()
            case GetInfo():
                latest, info = self._latest, self.info
                if latest is not None and info.state == InstanceState.READY:
                    info = replace(info, rss_bytes=latest[0], cpu_percent=latest[1])
                return to_wire(info)
            case Crash():
                crash = CrashRequested("crash requested")
                crash.details = {"output_tail": self._exit_tail()}  # type: ignore[attr-defined]
                raise crash
        return None

    def _exit_tail(self) -> list[str]:
        return [] if self._capture is None else self._capture.exit_tail()

    def _fail(self, reason: str, **details: Any) -> None:
        at = rfc3339(time.time())
        if self.info.state == InstanceState.READY:  # leave the routes before anything else
            gone = self._workload is not None and self._workload.exited
            self._set(state=InstanceState.STOPPED if gone else InstanceState.DRAINING,
                      reason=reason)
        else:
            self.info = replace(self.info, reason=reason)
        # the output's tail (a read of the capture) only after: the shutdown's report has it
        tail = self._exit_tail()
        self.info = replace(self.info, last_exit=LastExit(self.info.id, reason, at, tuple(tail)))
        raise InstanceFailed(reason, {"app": self.spec.app, "pid": self.info.pid,
                                      "instance": self.info.id, "output_tail": tail, **details})

    def _schedule(self) -> None:
        interval = min(self.spec.health_interval, self.spec.sample_interval)
        # 50 ms of slack: the checks of hundreds of instances fire together, so the timer
        # thread wakes a few times a second instead of once per instance, and samples them all
        # in a row
        self._tick = shared_timers().call_later(interval, self._check, slack=_CHECK_SLACK)

    def _check(self) -> None:
        """One periodic check, run by the timer thread itself (not a turn of the actor).

        Samples the group (a few reads of ``/proc``, ~60 µs: no hand-over to another thread is
        cheaper than that); the liveness probe, when due, goes to the prober (non-blocking), so
        that a workload that hangs a probe delays no one. Either tells the actor only
        what needs it — a broken memory budget, a failed probe (and the good one after it),
        every fifth sample for the reports — and otherwise schedules the next check itself:
        exactly one of them owns the next tick. Hundreds of healthy instances thus cost no
        actor turns between reports.
        """
        workload, ref = self._workload, self.actor_ref
        if workload is None or self._closing.is_set() or self.info.state != InstanceState.READY:
            return
        self._checks += 1
        try:
            rss, cpu = workload.rss_bytes(), workload.cpu_percent()
        except Exception:  # never expected (/proc errors read as "gone"): keep checking
            log.exception("sampling %s failed", self.info.id)
            self._schedule()
            return
        self._latest = (rss, cpu)
        if rss > self.spec.mem_mb * 1024 * 1024:
            _tell(ref, _OverBudget(rss))
            return
        if self._checks % 5 == 0:
            _tell(ref, _Sampled(rss, cpu))
        now = time.monotonic()
        if now >= self._probe_due and self._engine is None:  # the liveness probe's own period
            self._probe_due = now + self.spec.health_interval
            shared_prober().probe(f"{self.info.url}{self.spec.health}",
                                  self.spec.health_timeout, self._probed_live)
            return
        self._schedule()

    def _probed_live(self, ok: bool) -> None:
        """A liveness probe's answer (in the prober's thread): the actor hears of failures."""
        if self._closing.is_set():
            return
        if not ok or self._failures:
            _tell(self.actor_ref, _Probed(ok))  # the actor counts, decides, schedules the next
            return
        self._schedule()

    def _over_budget(self, rss: int) -> None:
        if (self._closing.is_set() or self.info.state != InstanceState.READY
                or self._workload is None):
            return
        self._workload.terminate(grace=0.5)
        self._fail(f"mem_budget_exceeded: rss {rss / 1048576:.0f} MB > {self.spec.mem_mb} MB",
                   rss_bytes=rss)

    def _probed(self, ok: bool) -> None:
        if self._closing.is_set() or self.info.state != InstanceState.READY:
            return
        self._failures = 0 if ok else self._failures + 1
        if not ok and self._failures < self.spec.health_failures:
            # Ready since the last good probe: a green's warmup starts again (Flow D)
            self._set(ready_at=time.time())
        if self._failures >= self.spec.health_failures:
            if self._workload is not None:
                self._workload.terminate(grace=1.0)
            self._fail(f"health check failed {self._failures} times in a row")
        self._schedule()

    def _checked(self, report: CheckReport) -> None:
        """Apply what the manifest's checks say (:mod:`.checks`): Ready, serving, or a failure."""
        changes = report_changes(self.info, report, time.time())
        if report.failure is not None and self.info.state in LIVE_STATES:
            self.info = replace(self.info, **changes)
            self._fail(report.failure)  # the shutdown that follows stops the workload
        self._set(**changes)  # a report comes only when something changed
        if changes.get("state") == InstanceState.READY:
            self._schedule()

    # -- reporting -------------------------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        before = self.info.state
        self.info = replace(self.info, **changes)
        self._report(before)

    def _report(self, before: str | None = None) -> None:
        info = self.info
        if info.state == InstanceState.READY:
            message: Any = RegisterEndpoint(info)
        elif before == InstanceState.READY:
            message = DeregisterEndpoint(info)
        else:
            message = InstanceStatus(info)
        self._names.tell("fabric", message)
        self._names.tell(info.node, InstanceStatus(info))


def _tell(ref: Any, message: Any) -> None:
    with contextlib.suppress(Exception):
        ref.tell(message)
