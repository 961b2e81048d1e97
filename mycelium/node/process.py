"""Workload OS processes: spawn, notice the exit at once, signal, stop, reap.

A workload runs in its own session and process group, so that one ``killpg`` reaches everything
it started. Exits are noticed without a polling period: the shared reaper
(:mod:`mycelium.node.reaper`) calls :meth:`Workload._reap` the moment the child exits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal as _signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import psutil

from mycelium._logger import get_logger
from mycelium.errors import MyceliumError
from mycelium.node.containment import Confinement, Jail, stop_jail
from mycelium.node.health import free_port, probe_health
from mycelium.node.procfs import children as _children
from mycelium.node.procfs import group_alive as _group_alive
from mycelium.node.procfs import read_stat as _read_stat
from mycelium.node.procfs import wait_group_gone as _wait_group_gone
from mycelium.node.reaper import shared_reaper
from mycelium.priority import data_plane_priority
from supervisors.callbacks import call_logged

__all__ = ["Confinement", "ProcessError", "ProcessRecord", "Workload", "describe_exit",
           "free_port", "probe_health", "reap_leftovers", "spawn"]

log = get_logger(__name__)

#: How long a stop waits for the group to vanish after SIGKILL before giving up.
_KILL_WAIT = 5.0
#: How long a spawn retries while the binary is "text file busy" (see _popen_retrying).
_TXTBSY_WAIT = 0.5
#: How long one walk of a workload's process tree is reused (rss then cpu in one sample).
_GROUP_TTL = 0.1
_WALK_EVERY = 5.0
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class ProcessError(MyceliumError):
    """A workload process could not be started or controlled; the message says why."""


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """What the next mesh needs to find a workload a dead mesh left behind.

    ``create_time`` (psutil's, seconds since the epoch) tells the original process from a later
    one that reused its pid.
    """

    pid: int
    pgid: int
    create_time: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (orjson/json)."""
        return {"pid": self.pid, "pgid": self.pgid, "create_time": self.create_time}

    def write(self, path: Path) -> None:
        """Note the record at ``path`` so that a later ``up`` can reap the workload after a crash.

        Written atomically (rename) but not fsynced: the record only matters while the workload
        outlives the mesh, which a kill -9 of the mesh allows (the page cache survives it) and a
        machine crash does not (no workload survives that either). Hundreds of fsyncs during a
        mass start would otherwise queue behind each other and behind the fabric's plan writes.
        """
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, orjson.dumps(self.to_dict()))
        finally:
            os.close(fd)
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessRecord:
        """The inverse of :meth:`to_dict`.

        Raises:
            ProcessError: a field is missing or has the wrong type.
        """
        try:
            return cls(int(data["pid"]), int(data["pgid"]), float(data["create_time"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProcessError(f"bad process record {dict(data)!r}: {exc}") from exc


def describe_exit(returncode: int) -> str:
    """A return code in words: ``"exit code 1"``, ``"killed by SIGKILL"``.

    Negative codes are signals (subprocess's convention); ``128+N`` from a shell stays an exit code.
    """
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = _signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"


ExitCallback = Callable[[int], object]


class Workload:
    """One spawned workload process and its process group; made by :func:`spawn`.

    Thread-safe. The exit is learnt from the shared reaper; :meth:`terminate` and :meth:`signal`
    may be called from any thread, any number of times.
    """

    def __init__(self, popen: subprocess.Popen[bytes], argv: Sequence[str],
                 jail: Jail | None = None, env: Mapping[str, str] | None = None) -> None:
        self._popen = popen
        #: Finds the processes that left the group (see :mod:`mycelium.node.containment`).
        self.jail = jail
        self.argv: tuple[str, ...] = tuple(argv)
        self.env: Mapping[str, str] = dict(env or {})  # exactly the one it was started with
        self.pid: int = popen.pid
        self.pgid: int = popen.pid  # start_new_session: the leader of its own session and group
        try:  # a zombie still has its create time; only a vanished pid has none
            self.create_time: float = psutil.Process(self.pid).create_time()
        except psutil.Error:
            self.create_time = time.time()
        self._lock = threading.Lock()
        self._exited = threading.Event()
        self._returncode: int | None = None
        self._callbacks: list[ExitCallback] = []
        self._last_sample: dict[int, tuple[int, int]] = {}
        self._sampled_at = -1e9
        self._walked_at = -1e9  # when the group's members were last found via /proc children
        self._cpu_base: tuple[dict[int, int], float | None] = ({}, None)
        self._cpu_last = 0.0
        self._group_gone = False

    # -- exit ---------------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        """The return code once the main process was reaped (negative = signal), else None."""
        return self._returncode

    @property
    def exited(self) -> bool:
        """True once the main process exited and was reaped."""
        return self._exited.is_set()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the main process exited; its return code, or None on timeout."""
        self._exited.wait(timeout)
        return self._returncode

    def on_exit(self, callback: ExitCallback) -> None:
        """Call ``callback(returncode)`` exactly once when the main process exits.

        Called from the reaper thread, so it must not block (tell an actor, set an event). If the
        process already exited, it is called right away in the caller's thread.
        """
        with self._lock:
            if self._returncode is None:
                self._callbacks.append(callback)
                return
            returncode = self._returncode
        call_logged(log, f"exit callback for pid {self.pid}", callback, returncode)

    def _reap(self) -> None:
        """Reaper side: the pidfd is readable, so the child is a zombie; collect it."""
        with self._lock:  # signal() holds the lock too: the pid is never signalled once freed
            returncode = self._popen.wait()
            self._returncode = returncode
            callbacks, self._callbacks = self._callbacks, []
            # Its pgid may be reused once the group empties: note now if nothing is left in it,
            # so that a later terminate() never signals a stranger (one cheap syscall).
            try:
                os.killpg(self.pgid, 0)
            except ProcessLookupError:
                self._group_gone = True
            except PermissionError:
                pass
        self._exited.set()
        for callback in callbacks:
            call_logged(log, f"exit callback for pid {self.pid}", callback, returncode)

    # -- control ------------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the main process (not the group); a no-op once it exited."""
        with self._lock:
            if self._returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)

    def terminate(self, grace: float = 5.0, sweep: bool = True) -> int | None:
        """Stop the whole group: SIGTERM, then SIGKILL after ``grace``; idempotent.

        Blocks until the main process is reaped and no process is left in the group (bounded by
        ``grace`` plus a few seconds for SIGKILL to land).

        Args:
            grace: How long the group has between SIGTERM and SIGKILL.
            sweep: Also stop what left the group (its jail: a scan of ``/proc``); False leaves
                that to the caller (``stop_jail(workload.jail, …)``), e.g. off a respawn path.

        Returns:
            The main process's return code (None only if it could not be reaped in time).
        """
        if self._exited.is_set() and not self._group_gone and not _group_alive(self.pgid):
            self._group_gone = True
        if not self._group_gone:
            self._killpg(_signal.SIGTERM)
            deadline = time.monotonic() + max(grace, 0.0)
            if not self._wait_gone(deadline):
                self._killpg(_signal.SIGKILL)
                if not self._wait_gone(time.monotonic() + _KILL_WAIT):
                    log.warning("workload pid %s: group %s still alive after SIGKILL",
                                self.pid, self.pgid)
                    return self._returncode
            self._group_gone = True
        # then whatever left the group: one scan of /proc when nothing did
        jail = self.jail if sweep else None
        if jail is not None and not stop_jail(jail, grace=min(max(grace, 0.0), 0.5)):
            log.warning("workload pid %s: processes of its instance still alive after SIGKILL",
                        self.pid)
        return self._returncode

    def _killpg(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _wait_gone(self, deadline: float) -> bool:
        """Wait for the reap (an event) and then for the group to empty (polled); True if gone."""
        if not self._exited.wait(max(0.0, deadline - time.monotonic())):
            return False
        return _wait_group_gone(self.pgid, deadline)

    # -- resources ----------------------------------------------------------------------------

    def _sample(self) -> dict[int, tuple[int, int]]:
        """``{pid: (rss_pages, cpu_ticks)}`` for the main process and its descendants that are
        still in its group, from one read of ``/proc/PID/stat`` each (no scan of every process).

        One sample is reused for ``_GROUP_TTL`` so that sampling rss then cpu reads once. The
        descendants are looked up again (``/proc/PID/task/*/children``) every ``_WALK_EVERY``
        seconds; in between only the known members' ``stat`` is read, which halves the cost of a
        sample (a workload with no children: one read instead of three).
        """
        if self._returncode is not None:
            return {}
        now = time.monotonic()
        if now - self._sampled_at < _GROUP_TTL:
            return self._last_sample
        walk = now - self._walked_at >= _WALK_EVERY
        sample: dict[int, tuple[int, int]] = {}
        stack = [self.pid] if walk else list(self._last_sample) or [self.pid]
        while stack:
            pid = stack.pop()
            stat = _read_stat(pid)
            if stat is None or pid in sample or (pid != self.pid and stat[0] != self.pgid):
                continue
            sample[pid] = (stat[1], stat[2])
            if walk:
                stack.extend(_children(pid))
        if walk:
            self._walked_at = now
        self._last_sample, self._sampled_at = sample, now
        return sample

    def rss_bytes(self) -> int:
        """Resident memory of the main process and its descendants in the group, in bytes."""
        return sum(rss for rss, _ticks in self._sample().values()) * _PAGE_SIZE

    def cpu_percent(self) -> float:
        """CPU use of the group since the previous call (100.0 = one core; 0.0 on the first)."""
        sample = self._sample()
        now = self._sampled_at
        previous, then = self._cpu_base
        if then is not None and now <= then:
            return self._cpu_last  # the same sample as last time: same answer
        self._cpu_base = ({pid: ticks for pid, (_rss, ticks) in sample.items()}, now)
        if then is None or not sample:
            self._cpu_last = 0.0
            return 0.0
        # A process that joined since the last call counts from 0: it was born since then.
        used = sum(max(0, ticks - previous.get(pid, 0)) for pid, (_rss, ticks) in sample.items())
        self._cpu_last = 100.0 * used / _CLK_TCK / (now - then)
        return self._cpu_last

    def record(self) -> ProcessRecord:
        """What :func:`reap_leftovers` needs should this mesh die without stopping the workload."""
        return ProcessRecord(self.pid, self.pgid, self.create_time)

    def __repr__(self) -> str:
        state = "running" if self._returncode is None else describe_exit(self._returncode)
        return f"<Workload pid={self.pid} {state} {' '.join(self.argv)!r}>"


def _check_spawnable(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> str:
    """The binary's path, or a ProcessError that says precisely what is wrong."""
    if not argv:
        raise ProcessError("cannot spawn a workload: empty command line")
    if not cwd.is_dir():
        raise ProcessError(f"cannot spawn {argv[0]}: working directory {cwd} does not exist")
    binary = argv[0]
    if "/" not in binary:
        found = shutil.which(binary, path=env.get("PATH", os.defpath))
        if found is None:
            raise ProcessError(f"cannot spawn {binary}: not found on PATH")
        return found
    path = Path(binary) if Path(binary).is_absolute() else cwd / binary
    if not path.exists():
        raise ProcessError(f"cannot spawn {binary}: binary missing ({path})")
    if not path.is_file():
        raise ProcessError(f"cannot spawn {binary}: not a regular file ({path})")
    if not os.access(path, os.X_OK):
        raise ProcessError(f"cannot spawn {binary}: not executable ({path})")
    return str(path)


def _popen_retrying(argv: list[str], cwd: Path, env: dict[str, str], confine: Confinement,
                    log_file: IO[bytes], err_file: IO[bytes] | int = subprocess.STDOUT
                    ) -> subprocess.Popen[bytes]:
    """Popen, retried for a moment on ETXTBSY.

    A binary just extracted by this process can be "busy" while another thread's fork still holds
    the descriptor that wrote it (until that child execs); it clears within milliseconds.
    """
    delay = 0.002
    deadline = time.monotonic() + _TXTBSY_WAIT
    while True:
        try:
            with data_plane_priority():  # the workload runs at the mesh's original nice
                return subprocess.Popen(
                    argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                    stderr=err_file, close_fds=True, start_new_session=True,
                    umask=confine.umask, preexec_fn=confine.preexec, user=confine.user,
                    group=confine.group, extra_groups=None if confine.extra_groups is None
                    else list(confine.extra_groups))
        except OSError as exc:
            if exc.errno != errno.ETXTBSY or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.02)


def _interpreter_first(path: str) -> str:
    """PATH with the mesh's own interpreter directory first.

    A workload written as ``#!/usr/bin/env python3`` then starts the real interpreter, not a
    version-manager shim found earlier on PATH (pyenv's shim costs ~0.2 s of CPU per start,
    which is most of a small workload's start-up time).
    """
    bindir = os.path.dirname(sys.executable) if sys.executable else ""
    parts = [p for p in path.split(os.pathsep) if p and p != bindir]
    return os.pathsep.join([bindir, *parts]) if bindir else path


def spawn(argv: Sequence[str], cwd: Path, env: Mapping[str, str],
          log_path: Path | tuple[Path, Path], *, inherit_env: bool = True,
          confine: Confinement | None = None) -> Workload:
    """Start a workload in its own session and process group (see docs/reference.md).

    stdin is /dev/null; stdout and stderr are appended to ``log_path`` (or a pair: one each;
    O_APPEND files never block nor EPIPE); no other fd is inherited. The exit is watched at once.

    Args:
        argv: The binary and its arguments; a relative binary path is taken from ``cwd``.
        cwd: The working directory (must exist).
        env: Variables for the workload, on top of the mesh's own environment. Unless ``env``
            sets PATH, the mesh's interpreter directory leads the inherited PATH.
        log_path: The per-instance stdout/stderr log (created with its directory).
        inherit_env: False gives the workload ``env`` alone.
        confine: Credentials, limits and containment (the workload then gets ``env`` alone).

    Raises:
        ProcessError: the working directory or binary is missing, the binary is not executable
            or not a valid executable, an environment variable is not a string, or the log
            cannot be opened.
    """
    cwd = Path(cwd)
    argv = [os.fspath(arg) for arg in argv]
    bad = [key for key, value in env.items() if not isinstance(key, str)
           or not isinstance(value, str) or "=" in key or "\0" in key + value]
    if bad:
        raise ProcessError(f"cannot spawn {argv[0] if argv else '?'}: environment variable "
                           f"{bad[0]!r} must be a string name without '=' with a string value")
    confine = confine or Confinement()
    inherit_env = inherit_env and confine == Confinement()
    full_env = {**os.environ, **env} if inherit_env else dict(env)
    if inherit_env and "PATH" not in env:
        full_env["PATH"] = _interpreter_first(full_env.get("PATH", os.defpath))
    binary = _check_spawnable(argv, cwd, full_env)
    try:
        paths = log_path if isinstance(log_path, tuple) else (log_path,)
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        logs = [open(p, "ab") for p in paths]  # noqa: SIM115 - handed to the child, closed below
    except OSError as exc:
        raise ProcessError(f"cannot open workload log {log_path}: {exc.strerror}") from exc
    try:
        popen = _popen_retrying([*confine.prefix, binary, *argv[1:]], cwd, full_env, confine,
                                *logs)
    except OSError as exc:
        reasons: dict[int, str] = {errno.ENOEXEC: "not a valid executable",
                                   errno.EACCES: "permission denied",
                                   errno.ENOENT: "binary or interpreter missing",
                                   errno.ETXTBSY: "binary busy (still open for writing)"}
        reason = reasons.get(exc.errno or 0, exc.strerror or str(exc))
        raise ProcessError(f"cannot spawn {argv[0]}: {reason}") from exc
    finally:
        list(map(IO.close, logs))
    workload = Workload(popen, argv, confine.jail, full_env)
    shared_reaper().watch(workload.pid, workload._reap)
    return workload


def reap_leftovers(records: Iterable[ProcessRecord], grace: float = 2.0) -> list[int]:
    """Stop the process groups a dead mesh left running (the next ``up`` calls this).

    A group is stopped (SIGTERM to the group, ``grace``, SIGKILL) only if its leader still
    exists with the recorded create time, so a pid reused by an unrelated process is never
    touched. A leader that is a zombie nobody reaped still proves the group is the recorded one,
    so its surviving members are stopped too. A group whose leader is gone entirely is left
    alone: nothing then proves the pgid was not reused.

    Returns:
        The leader pids whose groups were signalled.
    """
    victims: list[ProcessRecord] = []
    for record in records:
        try:
            proc = psutil.Process(record.pid)
            if abs(proc.create_time() - record.create_time) > 0.005:
                continue
        except psutil.Error:
            continue
        if record.pgid != record.pid and not _leads(record.pid, record.pgid):
            continue  # the recorded leader left its group since: not ours to judge
        if not _group_alive(record.pgid):
            continue  # only zombies left: nothing to stop
        victims.append(record)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pgid, _signal.SIGTERM)
    deadline = time.monotonic() + grace
    for record in victims:
        if not _wait_group_gone(record.pgid, deadline):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pgid, _signal.SIGKILL)
    kill_deadline = time.monotonic() + _KILL_WAIT
    for record in victims:
        _wait_group_gone(record.pgid, kill_deadline)
    return [record.pid for record in victims]


def _leads(pid: int, pgid: int) -> bool:
    """True if ``pid`` is (still) in process group ``pgid``."""
    stat = _read_stat(pid)
    return stat is not None and stat[0] == pgid
