"""Containment: every process a workload starts belongs to its instance and dies with it.

A process group is not enough: ``setsid`` leaves it, a double fork re-parents to PID 1, and
``chdir /`` hides where it came from. An instance is tracked by what a process cannot shed:

- where the mesh can write a cgroup v2 directory, its **cgroup**
  (:class:`~.cgroups.InstanceCgroup`): the workload joins it before it execs, the kernel keeps
  every descendant in it, and ``cgroup.kill`` stops them all at once. A workload with a uid of
  its own cannot write its way out (the cgroups are root's), so the cgroup alone is its jail;
  one that shares the mesh's uid or is root could, so its uid/environment jail below is kept
  beside the cgroup and stopped too;
- under a root mesh with ``run_as = dynamic``, its **uid**: each instance has a uid of its own,
  a process cannot change it (no_new_privs forbids setuid binaries), so the instance's
  processes are exactly the processes of that uid (:class:`UidJail`);
- otherwise (the mesh's own user, a named ``run_as`` user, root) the uid is shared, so a process
  is the instance's when its environment names the instance's private ``HOME``
  (:class:`TagJail`) — weaker: a process that execs itself with a cleared environment escapes.

After a kill -9 of the mesh, the next ``up`` kills every process left in the home's cgroup,
every process of this home's uid range, and every process whose ``HOME`` is inside this home's
instances directory (:func:`reap_contained`). The mesh is not made a child subreaper:
re-parented orphans would become zombies of the mesh that its per-pid reaper never collects,
and the cgroup or the uid already finds them wherever they went.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .procfs import environ_has, poll_until
from .uids import UidRange

__all__ = ["Confinement", "Jail", "TagJail", "UidJail", "kill_all", "reap_contained", "scan"]


def _status_uids(pid: str) -> tuple[bool, tuple[int, ...]]:
    """``(alive, (real, effective, saved, fs uid))`` from /proc/PID/status; zombies are dead."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            text = fh.read()
    except OSError:
        return False, ()
    state = text.find(b"\nState:\t")
    if state >= 0 and text[state + 8:state + 9] in (b"Z", b"X"):
        return False, ()
    at = text.find(b"\nUid:")
    if at < 0:
        return state >= 0, ()
    line = text[at + 5:text.find(b"\n", at + 5)]
    return True, tuple(int(x) for x in line.split()[:4])


def _scan_all() -> list[tuple[str, tuple[int, ...]]]:
    """``(pid, uids)`` of every live process but this one: one read of /proc/*/status each."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != me:
            alive, uids = _status_uids(entry)
            if alive and uids:
                found.append((entry, uids))
    return found


class _SharedScan:
    """One scan of /proc for every thread that wants one at the same time.

    A scan reads the status of every process on the machine (~50 ms on a loaded two-core
    machine); a mass stop runs hundreds of jail stops at once, each polling for its members.
    A caller gets a scan that *started after it asked* (so it sees what its signals did), but
    callers that ask while one scan runs all share the next one.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = False
        self._done = 0  # scans completed
        self._result: list[tuple[str, tuple[int, ...]]] = []

    def take(self) -> list[tuple[str, tuple[int, ...]]]:
        with self._cond:
            want = self._done + (2 if self._running else 1)
            while self._done < want:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._cond.release()
                try:
                    result = _scan_all()
                except BaseException:
                    result = None
                    raise
                finally:
                    self._cond.acquire()
                    self._running = False
                    if result is not None:
                        self._result, self._done = result, self._done + 1
                    self._cond.notify_all()
            return self._result


_SHARED_SCAN = _SharedScan()


def scan(match: Callable[[str, tuple[int, ...]], bool]) -> Iterator[int]:
    """Pids of live (not zombie) processes for which ``match(pid, uids)`` holds.

    Never yields this process itself. Concurrent callers share one pass over /proc.
    """
    for entry, uids in _SHARED_SCAN.take():
        if match(entry, uids):
            yield int(entry)


class Jail:
    """The processes of one instance, wherever they went (base: matches nothing)."""

    def match(self, pid: str, uids: tuple[int, ...]) -> bool:
        """True if the process belongs to this instance."""
        return False

    def members(self) -> list[int]:
        """The instance's live processes."""
        return list(scan(self.match))

    def signal(self, sig: int) -> list[int]:
        """Send ``sig`` to every live process of the instance; the pids signalled."""
        return kill_all(self.members(), sig)

    def release(self) -> None:
        """Once no process is left: give back what the jail holds (a cgroup's directory)."""


@dataclass(frozen=True, slots=True)
class UidJail(Jail):
    """An instance with a uid of its own: every process with that uid (real or effective)."""

    uid: int

    def match(self, pid: str, uids: tuple[int, ...]) -> bool:
        return self.uid in uids[:2]


@dataclass(frozen=True, slots=True)
class TagJail(Jail):
    """An instance sharing its uid: the processes of ``uid`` whose env has ``HOME=home``."""

    uid: int
    home: str

    def match(self, pid: str, uids: tuple[int, ...]) -> bool:
        return self.uid in uids[:2] and environ_has(pid, f"\0HOME={self.home}\0".encode())


def kill_all(pids: list[int], sig: int) -> list[int]:
    """``kill(pid, sig)`` each; the pids that existed."""
    hit = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            hit.append(pid)
    return hit


def wait_empty(jail: Jail, deadline: float) -> bool:
    """Poll until the jail has no live process; False if the deadline passed first."""
    return poll_until(lambda: not jail.members(), deadline)


def stop_jail(jail: Jail, grace: float, kill_wait: float = 5.0) -> bool:
    """SIGTERM every process of the jail, SIGKILL after ``grace``; True once none is left.

    SIGKILL is repeated until the scan finds nobody: a process forked between a scan and its
    kill is caught by the next round. Once none is left, the jail is released (a cgroup's
    directory goes; releasing twice is harmless).
    """
    if _stop(jail, grace, kill_wait):
        jail.release()
        return True
    return False


def _stop(jail: Jail, grace: float, kill_wait: float) -> bool:
    if not jail.signal(signal.SIGTERM):
        return True
    if wait_empty(jail, time.monotonic() + grace):
        return True
    deadline = time.monotonic() + kill_wait
    while jail.signal(signal.SIGKILL):
        if wait_empty(jail, min(deadline, time.monotonic() + 0.2)):
            return True
        if time.monotonic() >= deadline:
            return False
    return True


@dataclass(frozen=True, slots=True)
class _Leftovers(Jail):
    """What a dead mesh of this home left: its uid range, or ``HOME`` under its instances."""

    uids: UidRange | None
    prefix: bytes

    def match(self, pid: str, uids: tuple[int, ...]) -> bool:
        if self.uids is not None and any(u in self.uids for u in uids[:2]):
            return True
        return environ_has(pid, self.prefix)


def reap_contained(uids: UidRange | None, instances_dir: str) -> list[int]:
    """Kill (SIGKILL, repeated until none is left) every leftover of a dead mesh of this home.

    Returns:
        The pids killed.
    """
    jail = _Leftovers(uids, f"\0HOME={instances_dir.rstrip(os.sep)}{os.sep}".encode())
    killed: list[int] = []
    deadline = time.monotonic() + 5.0
    while True:
        hit = jail.signal(signal.SIGKILL)
        killed += [pid for pid in hit if pid not in killed]
        if not hit or wait_empty(jail, min(deadline, time.monotonic() + 0.5)):
            return killed
        if time.monotonic() >= deadline:
            return killed


@dataclass(frozen=True, slots=True)
class Confinement:
    """How a spawn is confined (:mod:`mycelium.node.isolation` builds it; default: not at all).

    Attributes:
        prefix: A command that drops privileges and execs the rest (``setpriv … prlimit …``).
        preexec: The slow fallback of ``prefix`` (run between fork and exec), else None.
        umask: The workload's umask (-1: the mesh's).
        user: Popen's ``user=`` (the uid to switch to in the child), else None.
        group: Popen's ``group=``, else None.
        extra_groups: Popen's ``extra_groups=`` (``()`` clears them), else None.
        jail: Finds the instance's processes that left its group.
    """

    prefix: tuple[str, ...] = ()
    preexec: Callable[[], None] | None = None
    umask: int = -1
    user: int | None = None
    group: int | None = None
    extra_groups: tuple[int, ...] | None = None
    jail: Jail | None = None
