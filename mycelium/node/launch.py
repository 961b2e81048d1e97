"""What an instance's launch task does around the spawn: retry a busy binary, pace probes,
put the workload in its cgroup.

Plain functions with no actor state, used by :class:`~mycelium.node.instance.AppInstance`'s
launch task (on the launch pool, never in an actor's turn).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import socket
import threading
import time
from pathlib import Path

from mycelium.node.cgroups import CgroupTree, InstanceCgroup
from mycelium.node.containment import UidJail
from mycelium.node.health import free_port
from mycelium.node.process import Confinement, ProcessError, Workload, describe_exit, spawn

from .execgate import EXEC_GATE

__all__ = ["Launching", "exit_reason", "spawn_retrying", "workload_port"]

_PORTS_LOCK = threading.Lock()
_HANDED: dict[int, float] = {}  # port → when it was handed out (monotonic)
_HANDED_FOR = 10.0  # seconds a handed-out port is not handed out again


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_LOW = _ephemeral_low()


def workload_port(host: str) -> int:
    """A free TCP port for a workload, below the kernel's ephemeral range when there is room.

    A port the kernel picks by binding port 0 comes from the ephemeral range, the same range
    every outgoing connection's local port comes from: between its pick and the workload's own
    bind, one of the mesh's hundreds of probe connections a second could take it, and the
    workload failed to bind and exited (4-10 crashes in a start of 1,000). Below that range
    only explicit binds compete; a port is never handed out twice within ``_HANDED_FOR``.
    """
    if _LOW - 10000 < 1000:
        return free_port(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    now = time.monotonic()
    with _PORTS_LOCK:
        for port, at in list(_HANDED.items()):
            if now - at > _HANDED_FOR:
                del _HANDED[port]
        for _ in range(64):
            port = random.randrange(10000, _LOW)
            if port in _HANDED:
                continue
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            _HANDED[port] = now
            return port
    return free_port(host)


class Launching:
    """How many instances are probing for their first 200 right now.

    Each failed probe costs the mesh ~0.1 ms of CPU. One instance polls every 10 ms; hundreds
    starting at once would burn cores the workloads need to start, so the period grows with
    their number to keep the whole mesh near ``MAX_PROBE_RATE`` probes per second.
    """

    MAX_PROBE_RATE = 3000.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def enter(self) -> None:
        with self._lock:
            self.count += 1

    def leave(self) -> None:
        with self._lock:
            self.count -= 1

    def interval(self, base: float) -> float:
        return max(base, self.count / self.MAX_PROBE_RATE)


def spawn_retrying(argv: list[str], directory: Path, env: dict[str, str],
                   output: tuple[Path, ...], confine: Confinement | None = None,
                   cgroups: CgroupTree | None = None,
                   budget: tuple[int | None, float | None] = (None, None)) -> Workload:
    """Spawn, retrying briefly on ETXTBSY.

    Another thread's fork may briefly hold a copy of the descriptor that wrote this binary (a
    sibling instance extracting while we fork), which makes exec fail with "Text file busy"
    until that child has exec'd; it clears within milliseconds.

    With ``cgroups`` (and a ``confine``), the workload starts in a cgroup of its own named
    after ``directory``, with ``budget`` (mem MB, cpu cores) as its limits where the tree
    offers them; the cgroup becomes its jail (:mod:`.cgroups`).
    """
    cgroup: InstanceCgroup | None = None
    if cgroups is not None and confine is not None:
        cgroup, confine = _in_cgroup(cgroups, directory.name, confine, budget, "PWD" in env)
    try:
        return _spawn(argv, directory, env, output, confine)
    except BaseException:
        if cgroup is not None:
            with contextlib.suppress(OSError):
                cgroup.release()
        raise


# -- the cgroup hook (see .cgroups) -----------------------------------------------------------

def _in_cgroup(cgroups: CgroupTree, name: str, confine: Confinement,
               budget: tuple[int | None, float | None], pwd: bool
               ) -> tuple[InstanceCgroup, Confinement]:
    """The instance's new cgroup, and ``confine`` with the prefix that joins it.

    A workload with a uid of its own cannot leave its (root's) cgroup: the cgroup replaces its
    uid jail. Any other keeps its jail beside the cgroup (it could write its way out).
    """
    also = None if isinstance(confine.jail, UidJail) else confine.jail
    cgroup = cgroups.instance(name, budget[0], budget[1], also)
    return cgroup, dataclasses.replace(
        confine, prefix=(*cgroup.join_prefix(cgroups.sh, pwd), *confine.prefix), jail=cgroup)


def exit_reason(workload: Workload | None, returncode: int) -> str:
    """How the workload ended, in words; an OOM kill at its cgroup's ``memory.max`` is
    ``mem_budget_exceeded`` (the sampler's reason for the same broken budget)."""
    jail = None if workload is None else workload.jail
    if isinstance(jail, InstanceCgroup) and jail.mem_mb is not None and jail.oom_kills():
        return (f"mem_budget_exceeded: killed by the kernel at memory.max {jail.mem_mb} MB "
                f"({describe_exit(returncode)})")
    return describe_exit(returncode)


def _spawn(argv: list[str], directory: Path, env: dict[str, str], output: tuple[Path, ...],
           confine: Confinement | None) -> Workload:
    for attempt in range(50):
        try:
            with EXEC_GATE.spawning():  # never while a binary is being written (execgate.py)
                return spawn(argv, cwd=directory / "app", env=env,
                             log_path=(output[0], output[1]), confine=confine)
        except ProcessError as exc:
            if "busy" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.005)
    raise AssertionError("unreachable")
