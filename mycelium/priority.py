"""The control plane's CPU priority: the mesh's own threads yield the CPU to its data plane.

The mesh process (actors, probes, the fabric, whatever CPU-bound work they do) and its data
plane (the edge worker processes, the workloads) share the machine's cores. Under load the
data plane must win, as nginx's ``worker_priority`` or a systemd unit's ``CPUWeight`` would
arrange; so ``[mesh] control_nice`` nice steps are added to the mesh's own priority while every
child it starts keeps the mesh's original one. Two knobs, because the kernel has two levels:

- **the session's autogroup** (``/proc/self/autogroup``): with ``sched_autogroup_enabled`` the
  scheduler first shares the CPU between sessions, by their autogroup's nice, and only then
  between the threads of one session. Every child of the mesh runs in a session of its own
  (edge workers, workloads, exec checks: ``start_new_session``), so each is its own autogroup,
  created at nice 0, and raising the mesh's autogroup nice slows nobody but the mesh. Written
  only when the mesh leads its own session (systemd, a supervisor that spawns it with
  ``setsid``): the autogroup of a session it does not lead is its operator's shell's.
  Raising it needs no privilege.
- **every thread's nice** (``setpriority`` per thread, ``/proc/self/task``; threads created
  later inherit their creator's): what counts without autogroups (turned off, or the mesh in
  a cgroup with the cpu controller, as a systemd service can be). A child inherits the nice of
  the thread that forks it, so every spawn runs inside :func:`data_plane_priority`, which puts
  the spawning thread back at the original nice for the fork. That means lowering a nice
  again, which needs ``CAP_SYS_NICE`` or room under ``RLIMIT_NICE``: without it the threads
  are left alone (the decision in :func:`plan`), so that no child ever runs slower because of
  this.

With ``[edge] workers = 0`` the edge serves from a thread of the mesh's process: the data plane
is then inside the control plane and nothing is reniced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

__all__ = ["DEFAULT_CONTROL_NICE", "Facts", "Plan", "data_plane_priority", "lower_control_plane",
           "plan", "read_facts"]

DEFAULT_CONTROL_NICE = 5
"""``[mesh] control_nice``'s default: autogroup weight 335 against a data plane's 1024 (see
docs/benchmarks.md, "The control plane's CPU priority")."""

_MAX_NICE = 19
_MIN_NICE = -20
_CAP_SYS_NICE = 23
_AUTOGROUP = "/proc/self/autogroup"

_child_nice: int | None = None  # set once the threads were reniced: what a spawn restores


@dataclass(frozen=True, slots=True)
class Facts:
    """What :func:`plan` needs to know about this process (:func:`read_facts` reads them).

    Attributes:
        nice: The nice the process runs at (its main thread's): the data plane's.
        lowest: The lowest nice a thread of this process may set itself to: -20 with
            ``CAP_SYS_NICE`` (or an unlimited ``RLIMIT_NICE``), else ``20 - RLIMIT_NICE``.
        session_leader: Whether the process leads its own session (its autogroup is its own).
        autogroup_nice: Its autogroup's nice, None without autogroups in the kernel.
    """

    nice: int
    lowest: int
    session_leader: bool
    autogroup_nice: int | None


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`lower_control_plane` does.

    Attributes:
        threads: The nice every thread of the mesh gets, None: left as they are.
        autogroup: The nice the mesh's autogroup gets, None: left as it is.
        children: The nice every child is spawned at (the mesh's original one).
        why: One line for the operator when ``control_nice`` was asked but not (all) done,
            else empty.
    """

    threads: int | None
    autogroup: int | None
    children: int
    why: str = ""


def plan(control_nice: int, facts: Facts, in_process_edge: bool = False) -> Plan:
    """Decide what to renice (pure).

    Args:
        control_nice: Nice steps the control plane runs below the data plane (0: off).
        facts: This process, as :func:`read_facts` found it.
        in_process_edge: The edge serves from a thread of this process (``[edge] workers =
            0``): the data plane would be slowed with the control plane, so nothing is done.
    """
    off = Plan(None, None, facts.nice)
    if control_nice <= 0:
        return off
    if in_process_edge:
        return replace(off, why="control_nice: the mesh keeps its CPU priority: the edge "
                                "serves from its process ([edge] workers = 0)")
    target = min(_MAX_NICE, facts.nice + control_nice)
    threads = target if facts.lowest <= facts.nice and target > facts.nice else None
    autogroup = None
    if facts.session_leader and facts.autogroup_nice is not None:
        wanted = min(_MAX_NICE, facts.autogroup_nice + control_nice)
        autogroup = wanted if wanted > facts.autogroup_nice else None
    why = ""
    if threads is None and target > facts.nice:
        why = (f"control_nice: the mesh's threads stay at nice {facts.nice}: without "
               f"CAP_SYS_NICE (or room under RLIMIT_NICE) its children could not be given "
               f"nice {facts.nice} back"
               + ("; its session's autogroup runs at nice "
                  f"{autogroup}" if autogroup is not None else ""))
    return Plan(threads, autogroup, facts.nice, why)


def _lowest_nice() -> int:
    """The lowest nice this process may set: CAP_SYS_NICE, else RLIMIT_NICE's ceiling."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"CapEff:"):
                if int(line.split()[1], 16) >> _CAP_SYS_NICE & 1:
                    return _MIN_NICE
                break
    soft, _hard = resource.getrlimit(resource.RLIMIT_NICE)
    if soft == resource.RLIM_INFINITY:
        return _MIN_NICE
    return max(_MIN_NICE, 20 - int(soft))


def _autogroup_nice() -> int | None:
    """The nice of this process's autogroup (``/autogroup-42 nice 0``), None without one."""
    try:
        with open(_AUTOGROUP, encoding="ascii") as fh:
            return int(fh.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def read_facts() -> Facts:
    """This process's :class:`Facts`."""
    return Facts(nice=os.getpriority(os.PRIO_PROCESS, 0), lowest=_lowest_nice(),
                 session_leader=os.getsid(0) == os.getpid(), autogroup_nice=_autogroup_nice())


def _renice_threads(nice: int) -> None:
    """Give every thread of this process ``nice``; passes again while new threads appear."""
    done: set[int] = set()
    for _ in range(5):
        tids = {int(t) for t in os.listdir("/proc/self/task")} - done
        if not tids:
            return
        for tid in tids:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        done |= tids


def _write_autogroup(nice: int) -> bool:
    """Set the autogroup's nice; an unprivileged write may meet the kernel's limit of one
    autogroup change per 0.1 s on the whole machine (EAGAIN): retried a few times."""
    for _ in range(5):
        try:
            with open(_AUTOGROUP, "w", encoding="ascii") as fh:
                fh.write(str(nice))
            return True
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                return False
            time.sleep(0.11)  # the kernel's own rate limit: no event says it passed
    return False


def lower_control_plane(control_nice: int, in_process_edge: bool = False) -> Plan:
    """Renice this process (the mesh) as :func:`plan` decides; returns what was done.

    Call early, from the thread that starts the mesh (threads made later inherit its nice);
    threads that exist already are reniced too. Every spawn of a child must then run inside
    :func:`data_plane_priority`.
    """
    global _child_nice
    decided = plan(control_nice, read_facts(), in_process_edge)
    if decided.threads is not None:
        _child_nice = decided.children
        _renice_threads(decided.threads)
    if decided.autogroup is not None and not _write_autogroup(decided.autogroup):
        decided = replace(decided, autogroup=None, why=(
            decided.why or f"control_nice: {_AUTOGROUP} could not be written"))
    return decided


@contextlib.contextmanager
def data_plane_priority() -> Iterator[None]:
    """Run a spawn at the data plane's nice: the calling thread goes back to the mesh's
    original nice for the fork (the child inherits it), and to its own again after.

    No exec and no ``preexec_fn`` (which would cost the vfork path): two syscalls. A no-op
    unless :func:`lower_control_plane` reniced the threads.
    """
    child = _child_nice
    if child is None:
        yield
        return
    tid = threading.get_native_id()
    mine = os.getpriority(os.PRIO_PROCESS, tid)
    if mine == child:
        yield
        return
    try:
        os.setpriority(os.PRIO_PROCESS, tid, child)
    except OSError:  # the plan checked the privilege; a lost one costs the child its nice
        yield
        return
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, tid, mine)  # raising a nice needs no privilege
