"""The check engine: runs one instance's manifest ``checks`` and tells the instance what they say.

Decisions are :class:`~mycelium.node.checkstate.Book`'s; this module only runs checks and
applies them. Nothing here blocks an actor:

- ``http`` and ``tcp`` checks are one non-blocking socket each in the node's prober thread
  (:meth:`~mycelium.node.prober.Prober.check`);
- ``exec`` checks run on a small pool per node (``[node] exec_checks_parallel`` threads, so at
  most that many at once), in the workload's directory with its environment, in a process group
  of their own that is killed at the timeout (and after the check, so nothing it started stays);
- ``notify`` checks are answered by the workload over its ``NOTIFY_SOCKET``
  (:mod:`.notify`); with ``watchdog`` a timer restarts it when ``WATCHDOG=1`` stops coming.

Each check runs again ``interval`` after its previous result (never two at once), from the
shared timers; once the instance is Ready up to 2 % of the interval (≤ 50 ms,
:func:`~.checkstate.early`) sooner, so that the checks of hundreds of instances come due
together and run in one wake-up. The instance hears of a change — Ready, serving, a failure, a
check whose outcome or detail differs from its own previous one, a new ``STATUS=`` — as one
:class:`CheckReport` carrying the whole truth and a sequence number, so a report overtaken by a
later one is simply dropped. Results that change nothing (checks taking turns included) are
reported at most every :data:`REFRESH` seconds (for ``last_check``'s ``at``): hundreds of
healthy instances cost no actor turns between them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mycelium._logger import get_logger
from mycelium.messages import CheckReport, CheckResult, InstanceInfo
from mycelium.priority import data_plane_priority
from mycelium.spores.checks import CheckSpec
from mycelium.states import InstanceState
from supervisors.timers import TimerHandle, shared_timers

from .checkstate import Book, early, effective_checks, watchdog_expired
from .notify import Notice, NotifySocket
from .prober import shared_prober

__all__ = ["REFRESH", "CheckEngine", "engine_for", "report_changes", "run_exec"]

log = get_logger(__name__)

REFRESH = 10.0
"""Seconds between reports of results that changed nothing (``last_check.at`` stays this fresh)."""
_STATUS_DELAY = 0.05  # STATUS= lines are reported at most this often (a flood stays cheap)
_MAX_STARTUP_RATE = 3000.0  # startup polls a second over the whole mesh, at most (see _Starting)
_EXEC_POOLS: dict[str, ThreadPoolExecutor] = {}
_EXEC_LOCK = threading.Lock()


class _Starting:
    """How many engines wait for their instance's first Ready right now.

    Each startup poll costs the mesh ~0.1 ms of CPU; hundreds of instances polling every 10 ms
    would burn the cores they need to start, so the poll period grows with their number (as
    the mesh's own startup probe does) to keep the whole mesh near ``_MAX_STARTUP_RATE``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.count += n

    def period(self, base: float) -> float:
        return max(base, self.count / _MAX_STARTUP_RATE)


_STARTING = _Starting()


class CheckEngine:
    """Runs one instance's checks from :meth:`start` until :meth:`close`.

    Args:
        checks: The manifest's checks (``GET <health>`` is added as the startup check when
            there is neither a startup nor a readiness check).
        health: The manifest's health path.
        directory: The instance's directory (``NOTIFY_SOCKET`` lives there).
        node: The node's name (exec checks share its pool).
        exec_parallel: How many exec checks may run at once on the node.
        startup_timeout: Seconds the instance has to get Ready.
        report: Called with each :class:`CheckReport`, from the prober's, the timers', the
            notifier's or an exec thread; it must be quick (tell the actor).
    """

    def __init__(self, checks: tuple[CheckSpec, ...], *, health: str, directory: Path,
                 node: str, exec_parallel: int, startup_timeout: float,
                 report: Callable[[CheckReport], None]) -> None:
        self._book = Book.new(effective_checks(checks, health))
        self._directory = directory
        self._node = node
        self._exec_parallel = exec_parallel
        self._startup_timeout = startup_timeout
        self._report = report
        self._lock = threading.Lock()
        self._closed = False
        self._running: set[str] = set()
        self._timers: set[TimerHandle] = set()
        self._seq = 0
        self._last: CheckResult | None = None
        self._reported: tuple[Any, ...] | None = None
        self._reported_at = 0.0
        self._outcomes: dict[str, tuple[bool, str]] = {}  # each check's last (ok, detail)
        self._news = False  # a check's outcome changed since the last report
        self._status: str | None = None
        self._status_due = False
        self._failure: str | None = None
        self._ping = 0.0
        self._url = ""
        self._env: dict[str, str] = {}
        self._cwd = directory
        self._prefix: tuple[str, ...] = ()
        self._umask = -1
        self._notify: NotifySocket | None = None
        self._starting = False  # counted in _STARTING
        self._notify_spec = next((c for c in checks if c.type == "notify"), None)

    # -- the instance's side ---------------------------------------------------------------

    def environment(self, owner: tuple[int, int] | None = None) -> dict[str, str]:
        """``NOTIFY_SOCKET`` (bound now) and ``WATCHDOG_USEC`` for a notify check, else {}.

        Args:
            owner: The workload's (uid, gid) when it is not the mesh's: the socket (0600) is
                handed to it, so only it and the mesh can send.

        Raises:
            OSError: the notify socket cannot be bound.
        """
        spec = self._notify_spec
        if spec is None:
            return {}
        self._notify = NotifySocket(self._directory, self._notified)
        if owner is not None and self._notify.path is not None:
            os.chown(self._notify.path, *owner)
        env = {"NOTIFY_SOCKET": self._notify.address}
        if spec.watchdog is not None:
            env["WATCHDOG_USEC"] = str(round(spec.watchdog * 1_000_000))
        return env

    def start(self, pid: int, pgid: int, url: str, env: Mapping[str, str], cwd: Path,
              prefix: tuple[str, ...] = (), umask: int = -1) -> None:
        """The workload runs (``pid``, serving on ``url``): run the checks, start the deadline.

        ``env`` (exactly the environment the workload was spawned with, its
        :attr:`~mycelium.node.process.Workload.env`), ``cwd``, and the workload's confinement
        (``prefix``: the command that drops to its uid and limits; ``umask``) are what exec
        checks run with: a check runs as the workload does, never as the mesh.
        """
        self._url, self._env, self._cwd = url, dict(env), cwd
        self._prefix, self._umask = prefix, umask
        with self._lock:
            self._after(self._startup_timeout, self._deadline)
            self._starting = True
            _STARTING.add(1)
        if self._notify is not None:
            self._notify.allow(pid, pgid)
        self._kick()

    def latest(self, report: CheckReport) -> bool:
        """``report`` is the last one sent and the engine still runs (the instance applies only
        those: reports from different threads may arrive out of order)."""
        with self._lock:
            return not self._closed and report.seq == self._seq

    def close(self) -> None:
        """Stop every check and timer and remove the notify socket (idempotent)."""
        with self._lock:
            self._closed = True
            timers, self._timers = self._timers, set()
            self._started()
        for handle in timers:
            shared_timers().cancel(handle)
        if self._notify is not None:
            self._notify.close()

    def _started(self) -> None:
        """No longer waiting for the first Ready (the lock held; counted once)."""
        if self._starting:
            self._starting = False
            _STARTING.add(-1)

    # -- running checks --------------------------------------------------------------------

    def _kick(self, finished: CheckSpec | None = None) -> None:
        """Schedule every active check that is neither scheduled nor in flight."""
        with self._lock:
            if self._closed or self._failure is not None:
                return
            for spec in self._book.active():
                if spec.type == "notify" or spec.name in self._running:
                    continue
                self._running.add(spec.name)
                delay = self._book.interval(spec) if spec is finished else 0.0
                slack = 0.0
                if delay and not self._book.ready:
                    delay = _STARTING.period(delay)
                elif delay:  # periodic: fire with the other instances' checks due about now,
                    slack = early(delay)  # a little early, never late
                self._after(delay - slack, functools.partial(self._run, spec), slack)

    def _after(self, delay: float, callback: Callable[[], None], slack: float = 0.0) -> None:
        """A timer that :meth:`close` cancels (called with the lock held).

        ``slack`` lets the shared timers round the due time up (see
        :meth:`~supervisors.timers.Timers.call_later`): the periodic checks of hundreds of
        instances then run in batches, one wake-up of the timer and prober threads for many
        checks instead of one each (which cost more than the checks themselves).
        """
        handle: list[TimerHandle] = []

        def fire() -> None:
            with self._lock:
                if handle:
                    self._timers.discard(handle[0])
            callback()

        handle.append(shared_timers().call_later(delay, fire, slack))
        self._timers.add(handle[0])

    def _run(self, spec: CheckSpec) -> None:
        if self._closed:
            return

        def done(ok: bool, detail: str) -> None:
            self._result(spec, ok, detail)

        try:
            if spec.type == "http":
                shared_prober().check("http", f"{self._url}{spec.path}", spec.timeout, done)
            elif spec.type == "tcp":
                shared_prober().check("tcp", f"{self._url}/", spec.timeout, done)
            else:
                command, cwd, env = [*self._prefix, *spec.command], self._cwd, self._env
                umask = self._umask

                def run() -> None:
                    try:
                        ok, detail = run_exec(command, cwd, env, spec.timeout, umask)
                    except Exception as exc:  # never expected: the check must still answer
                        ok, detail = False, f"exec check failed: {exc}"
                    done(ok, detail)

                _exec_pool(self._node, self._exec_parallel).submit(run)
        except Exception as exc:  # a URL the prober refuses, a pool shut down at exit
            done(False, str(exc))

    def _result(self, spec: CheckSpec, ok: bool, detail: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._running.discard(spec.name)
            self._observe(CheckResult(spec.name, ok, time.time(), detail))
        self._kick(spec)
        self._send()

    def _observe(self, result: CheckResult) -> None:
        """Count a result (the lock held): the book decides, the engine remembers."""
        self._book, decision = self._book.observe(result, time.monotonic())
        self._last = result
        outcome = (result.ok, result.detail)
        if self._outcomes.get(result.check) != outcome:  # not merely another check's turn
            self._outcomes[result.check] = outcome
            self._news = True
        if self._failure is None:
            self._failure = decision.restart or decision.launch_failed

    # -- notify ----------------------------------------------------------------------------

    def _notified(self, notice: Notice) -> None:
        """Datagrams of the workload (in the notifier's thread)."""
        spec = self._notify_spec
        with self._lock:
            if self._closed or spec is None:
                return
            if notice.watchdog:
                self._ping = time.monotonic()
            if notice.status is not None and notice.status != self._status:
                self._status = notice.status
                if not self._status_due:
                    self._status_due = True
                    self._after(_STATUS_DELAY, self._status_flush)
            if notice.stopping:
                log.debug("%s: the workload sent STOPPING=1", self._directory.name)
            if notice.ready and not self._book.ready and spec in self._book.active():
                self._observe(CheckResult(spec.name, True, time.time(), "READY=1"))
                if spec.watchdog is not None:
                    self._ping = time.monotonic()
                    self._after(spec.watchdog, self._watch)
            else:
                return
        self._kick()
        self._send()

    def _status_flush(self) -> None:
        with self._lock:
            self._status_due = False
        self._send()

    def _watch(self) -> None:
        spec = self._notify_spec
        assert spec is not None and spec.watchdog is not None
        with self._lock:
            if self._closed or self._failure is not None:
                return
            now = time.monotonic()
            if not watchdog_expired(self._ping, now, spec.watchdog):
                self._after(self._ping + spec.watchdog - now + 0.001, self._watch)
                return
            self._failure = "watchdog_timeout"
            self._last = CheckResult(spec.name, False, time.time(),
                                     f"no WATCHDOG=1 for {spec.watchdog:g}s")
        self._send()

    def _deadline(self) -> None:
        with self._lock:
            if self._closed or self._failure is not None or self._book.ready:
                return
            waiting = self._book.active() or self._book.specs
            last = self._last
            if last is not None and any(s.name == last.check for s in waiting):
                why = f"{last.check}: {last.detail}"
            elif waiting[0].type == "notify":
                why = f"{waiting[0].name}: no READY=1"
            else:
                why = f"{waiting[0].name}: no answer"
            self._failure = f"not healthy within {self._startup_timeout:g}s: {why}"
        self._send()

    # -- reporting -------------------------------------------------------------------------

    def _send(self) -> None:
        """Tell the instance, if something changed or the last report is :data:`REFRESH` old.

        A result that only repeats its check's previous outcome changes nothing, even when
        another check ran in between (else two checks taking turns would make every result a
        report: an actor turn and a published instance each, per check and interval).
        """
        with self._lock:
            if self._closed:
                return
            last = self._last
            facts = (self._book.ready, self._book.serving, self._failure, self._status,
                     last is None)
            now = time.monotonic()
            if facts == self._reported and not self._news and now - self._reported_at < REFRESH:
                return
            self._reported, self._reported_at, self._news = facts, now, False
            if self._book.ready or self._failure is not None:
                self._started()
            self._seq += 1
            report = CheckReport(self._seq, self._book.ready, self._book.serving, last,
                                 self._status, self._failure)
        self._report(report)


def engine_for(spec: Any, directory: Path,
               report: Callable[[CheckReport], None]) -> CheckEngine | None:
    """The engine of an instance whose spec (an ``InstanceSpec``) has checks, else None."""
    if not spec.checks:
        return None
    return CheckEngine(spec.checks, health=spec.health, directory=directory, node=spec.node,
                       exec_parallel=spec.exec_parallel, startup_timeout=spec.startup_timeout,
                       report=report)


def report_changes(info: InstanceInfo, report: CheckReport, now: float) -> dict[str, Any]:
    """The fields of ``info`` that ``report`` changes (``now``: epoch seconds, for ready_at).

    A Launching instance whose checks say Ready becomes Ready (unless they also say it failed);
    the instance's ``serving``, ``last_check`` and ``status_text`` follow the report.
    """
    changes: dict[str, Any] = {"serving": report.serving, "last_check": report.last,
                               "status_text": report.status_text}
    if report.ready and report.failure is None and info.state == InstanceState.LAUNCHING:
        changes.update(state=InstanceState.READY, ready_at=now)
    return {key: value for key, value in changes.items() if getattr(info, key) != value}


def run_exec(command: list[str], cwd: Path, env: Mapping[str, str],
             timeout: float, umask: int = -1) -> tuple[bool, str]:
    """Run one exec check: (passed, detail), the detail being the exit and the output's first line.

    The command runs in a new session (its own process group); at the timeout the whole group
    is killed, and after the check whatever it left running in the group is killed too.
    """
    try:
        with data_plane_priority():  # a check runs at the mesh's original nice
            proc = subprocess.Popen(command, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, umask=umask)
    except OSError as exc:
        return False, f"cannot run {command[0]}: {exc.strerror or exc}"
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    finally:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    if timed_out:
        return False, f"timeout after {timeout:g}s (killed)"
    lines = (out or b"").decode("utf-8", "replace").strip().splitlines()
    first = lines[0].strip()[:200] if lines else ""
    detail = f"exit code {proc.returncode}" + (f": {first}" if first else "")
    return proc.returncode == 0, detail


def _exec_pool(node: str, parallel: int) -> ThreadPoolExecutor:
    with _EXEC_LOCK:
        pool = _EXEC_POOLS.get(node)
        if pool is None:
            pool = _EXEC_POOLS[node] = ThreadPoolExecutor(
                max_workers=max(1, parallel), thread_name_prefix=f"mycelium-exec-{node}")
        return pool
