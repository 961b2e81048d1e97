"""A cgroup v2 per instance: the kernel's own list of every process an instance started.

Where the mesh can write a cgroup v2 directory, each instance gets
``<base>/mycelium-<home id>/<instance>``, and its workload joins it before it execs (so its
first fork is inside already). A process cannot leave a cgroup by ``setsid``, a double fork,
``chdir /`` or closing its descriptors: only by writing to another cgroup's ``cgroup.procs``,
which needs write access there (root's directories are 0755: a dynamic uid cannot). Stopping
an instance is then one write to ``cgroup.kill`` and a wait for ``cgroup.events`` to say
``populated 0``; no scan of ``/proc``.

**Where** (``[node] cgroup``): ``auto`` (default) takes the mesh's own cgroup (the ``0::``
line of ``/proc/self/cgroup``) inside a writable ``cgroup2`` mount found in
``/proc/self/mountinfo`` (never a fixed path: ``/sys/fs/cgroup`` is cgroup v2 on some machines,
``/sys/fs/cgroup/unified`` on hybrid ones), if the mesh may create directories there; ``off``
never uses a cgroup; an absolute path names a delegated cgroup v2 directory to use instead
(e.g. a systemd unit's with ``Delegate=yes``). Without one, containment stays by uid or
environment (:mod:`.containment`) and budgets are sampled.

**Limits**: when the home's cgroup offers ``memory`` (and ``cpu``, ``pids``) — they are
enabled in its ``cgroup.subtree_control`` — each instance gets ``memory.max`` (its memory
budget; ``memory.oom.group`` so an OOM kill takes the whole instance), ``cpu.max`` (its cpu
budget as quota/period) and ``pids.max``; an OOM kill (``oom_kill`` in ``memory.events``) is
reported as ``mem_budget_exceeded``. A hybrid machine whose memory/cpu/pids controllers are
bound to cgroup v1 offers none: the cgroup then only contains, and budgets stay sampled.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from mycelium.errors import BadInput

from .containment import Jail, kill_all
from .procfs import poll_until

__all__ = ["CPU_PERIOD", "PIDS_MAX", "CgroupError", "CgroupTree", "InstanceCgroup", "count",
           "cpu_max", "limit_files", "locate", "mounts", "own_cgroup", "tree_name"]

#: ``cpu.max``'s period in microseconds (the kernel's default).
CPU_PERIOD = 100_000
#: The smallest quota the kernel accepts (1 ms per period).
_MIN_QUOTA = 1_000
#: ``pids.max`` of every instance: a fork bomb stops there (no budget field names it yet).
PIDS_MAX = 4096
#: The controllers a limit needs, in the order they are enabled.
LIMIT_CONTROLLERS = ("cpu", "memory", "pids")


class CgroupError(BadInput):
    """``[node] cgroup`` names no writable cgroup v2 directory (exit 2, nothing started)."""


# -- pure: what the files say, what to write ----------------------------------------------------

def mounts(mountinfo: str) -> list[tuple[str, str, bool]]:
    """``(root inside the hierarchy, mount point, writable)`` of each ``cgroup2`` mount.

    A ``/proc/self/mountinfo`` line is ``id parent major:minor root point options [tags] -
    fstype source super-options``; spaces in paths are written ``\\040``.
    """
    found = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or not tail or tail[0] != "cgroup2":
            continue
        found.append((_unescape(fields[3]), _unescape(fields[4]),
                      "rw" in fields[5].split(",")))
    return found


def _unescape(path: str) -> str:
    """A mountinfo path as it is (octal escapes of space, tab, newline and backslash)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def own_cgroup(proc_cgroup: str) -> str | None:
    """The cgroup v2 path of the ``0::PATH`` line of ``/proc/self/cgroup``; None without one."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def locate(found: list[tuple[str, str, bool]], own: str | None) -> Path | None:
    """The directory of cgroup ``own`` in the first writable mount that shows it."""
    if own is None:
        return None
    for root, point, writable in found:
        if not writable:
            continue
        root = root.rstrip("/") or "/"
        if own == root or root == "/" or own.startswith(root + "/"):
            rest = own[len(root):] if root != "/" else own
            return Path(point) / rest.lstrip("/")
    return None


def tree_name(home_root: Path) -> str:
    """``mycelium-<first 16 hex of sha256(home path)>``: two homes never share a cgroup."""
    return "mycelium-" + hashlib.sha256(str(home_root).encode()).hexdigest()[:16]


def cpu_max(cpu: float | None) -> str:
    """``cpu.max`` for a budget of ``cpu`` cores: ``"<quota> <period>"``, ``max`` for none."""
    if cpu is None or cpu <= 0:
        return f"max {CPU_PERIOD}"
    return f"{max(_MIN_QUOTA, round(cpu * CPU_PERIOD))} {CPU_PERIOD}"


def limit_files(controllers: frozenset[str], mem_mb: int | None, cpu: float | None,
                pids: int = PIDS_MAX) -> dict[str, str]:
    """The interface files to write for a budget, in order, given the offered ``controllers``.

    ``memory.oom.group`` first: an OOM kill then takes the whole instance, not one process of
    it; ``memory.swap.max`` 0 keeps the budget from spilling into swap (written only where
    the file exists: swap accounting may be off).
    """
    files: dict[str, str] = {}
    if "memory" in controllers and mem_mb is not None and mem_mb > 0:
        files["memory.oom.group"] = "1"
        files["memory.swap.max"] = "0"
        files["memory.max"] = str(mem_mb * 1024 * 1024)
    if "cpu" in controllers:
        files["cpu.max"] = cpu_max(cpu)
    if "pids" in controllers and pids > 0:
        files["pids.max"] = str(pids)
    return files


def count(text: str, key: str) -> int:
    """The value of ``key`` in a flat-keyed file (``cgroup.events``, ``memory.events``)."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            with contextlib.suppress(ValueError):
                return int(value)
    return 0


# -- thin: the files themselves ----------------------------------------------------------------

def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


@dataclass(frozen=True, slots=True)
class InstanceCgroup(Jail):
    """One instance's cgroup; as a :class:`Jail`, its processes are the cgroup's.

    Attributes:
        path: The cgroup's directory.
        mem_mb: Its ``memory.max`` in MB, if one was written (None: no memory limit).
        also: A jail that reinforces it when the workload could write its way out (it shares
            the mesh's uid, or is root): its processes are stopped too.
    """

    path: Path
    mem_mb: int | None = None
    also: Jail | None = None

    def procs(self) -> list[int]:
        """The live processes in the cgroup and in any cgroup below it."""
        pids: list[int] = []
        for directory, _subdirs, _files in os.walk(self.path):
            pids += [int(p) for p in _read(Path(directory) / "cgroup.procs").split()]
        return pids

    def members(self) -> list[int]:
        pids = self.procs()
        if self.also is not None:
            pids += [pid for pid in self.also.members() if pid not in pids]
        return pids

    def signal(self, sig: int) -> list[int]:
        pids = self.procs()
        if not (sig == signal.SIGKILL and pids and self.kill()):
            pids = kill_all(pids, sig)
        if self.also is not None:
            pids += [pid for pid in self.also.signal(sig) if pid not in pids]
        return pids

    def kill(self) -> bool:
        """SIGKILL every process of the cgroup and its children at once (``cgroup.kill``, Linux
        5.14+: no fork can race it); False where the file is missing or the write failed."""
        try:
            _write(self.path / "cgroup.kill", "1")
        except OSError:
            return False
        return True

    def populated(self) -> bool:
        """True while a live process is in the cgroup (zombies do not count)."""
        return count(_read(self.path / "cgroup.events"), "populated") > 0

    def oom_kills(self) -> int:
        """How many processes the kernel killed at ``memory.max`` (0 without the controller)."""
        return count(_read(self.path / "memory.events"), "oom_kill")

    def join_prefix(self, sh: str, pwd: bool = False) -> tuple[str, ...]:
        """A command prefix that moves itself into the cgroup, then execs the rest.

        Python cannot run safely between fork and exec in a threaded mesh, and ``subprocess``
        has no cgroup argument, so the child's first exec is ``sh``: it writes ``0`` (itself)
        to ``cgroup.procs`` and execs the rest with the same pid, before anything of the
        workload runs. If the write fails the workload never starts (exit 2). The shell
        exports a ``PWD`` of its own; it is unset again unless the environment had one
        (``pwd``), so the workload's environment stays exactly the one built for it.
        """
        unset = "" if pwd else "unset PWD; "
        return (sh, "-c", f'echo 0 >"$0" || exit 2; {unset}exec "$@"',
                str(self.path / "cgroup.procs"))

    def release(self) -> None:
        """Remove the cgroup (and any it made below itself) once it is empty."""
        for directory, _subdirs, _files in sorted(os.walk(self.path), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        if self.also is not None:
            self.also.release()


@dataclass(frozen=True, slots=True)
class CgroupTree:
    """This home's cgroup, ``<base>/mycelium-<home id>``: one child per instance.

    Attributes:
        path: The home's cgroup directory (created by :meth:`detect`).
        controllers: The controllers its instances get (``memory``, ``cpu``, ``pids``).
        sh: The shell that joins a workload to its cgroup (:meth:`InstanceCgroup.join_prefix`).
    """

    path: Path
    controllers: frozenset[str]
    sh: str

    @property
    def limits(self) -> bool:
        """True when the memory budget is the kernel's (``limits: cgroup``)."""
        return "memory" in self.controllers

    @classmethod
    def detect(cls, home_root: Path, setting: str = "auto") -> CgroupTree | None:
        """Find the base (see the module's doc), create the home's cgroup, enable its limits.

        Returns:
            The tree, or None (``off``; ``auto`` on a machine without a writable cgroup v2).

        Raises:
            CgroupError: a configured path is not a writable cgroup v2 directory.
        """
        sh = shutil.which("sh")
        if setting == "off" or sh is None:
            return None
        if setting == "auto":
            base = locate(mounts(_read(Path("/proc/self/mountinfo"))),
                          own_cgroup(_read(Path("/proc/self/cgroup"))))
            if base is None or not os.access(base / "cgroup.procs", os.W_OK):
                return None
        else:
            base = Path(setting)
            if not base.is_absolute() or not (base / "cgroup.controllers").is_file():
                raise CgroupError(f"config: node.cgroup: {setting!r} is not a cgroup v2 "
                                  f"directory (use auto, off or the path of one)")
        path = base / tree_name(Path(home_root).absolute())
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            if setting == "auto":
                return None
            raise CgroupError(f"config: node.cgroup: cannot create {path}: "
                              f"{exc.strerror}") from None
        offered = set(_read(base / "cgroup.controllers").split()) & set(LIMIT_CONTROLLERS)
        enabled = set(_read(base / "cgroup.subtree_control").split())
        for name in sorted(offered - enabled):  # fails (EBUSY) where base itself has processes
            with contextlib.suppress(OSError):
                _write(base / "cgroup.subtree_control", f"+{name}")
        mine = set(_read(path / "cgroup.controllers").split()) & set(LIMIT_CONTROLLERS)
        for name in sorted(mine):
            with contextlib.suppress(OSError):
                _write(path / "cgroup.subtree_control", f"+{name}")
        given = frozenset(set(_read(path / "cgroup.subtree_control").split()) & mine)
        return cls(path=path, controllers=given, sh=sh)

    def instance(self, name: str, mem_mb: int | None = None, cpu: float | None = None,
                 also: Jail | None = None) -> InstanceCgroup:
        """Create the cgroup of instance ``name`` with its budget's limits.

        Raises:
            OSError: the directory or a limit could not be written (the directory is removed).
        """
        path = self.path / name
        path.mkdir(exist_ok=True)
        files = limit_files(self.controllers, mem_mb, cpu)
        try:
            for file, value in files.items():
                if file == "memory.swap.max" and not (path / file).exists():
                    continue
                _write(path / file, value)
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise
        return InstanceCgroup(path, mem_mb if "memory.max" in files else None, also)

    def leftovers(self) -> list[InstanceCgroup]:
        """The instance cgroups found in the home's cgroup (a dead mesh's, at the next ``up``)."""
        try:
            return [InstanceCgroup(entry) for entry in sorted(self.path.iterdir())
                    if entry.is_dir()]
        except OSError:
            return []

    def reap(self, wait: float = 5.0) -> list[int]:
        """Kill every process a dead mesh left in the home's cgroup; remove its instances'.

        Returns:
            The pids killed.
        """
        found = self.leftovers()
        killed: list[int] = []
        for group in found:
            killed += group.signal(signal.SIGKILL)
        deadline = time.monotonic() + wait
        for group in found:
            wait_unpopulated(group, deadline)
            group.release()
        return killed

    def remove(self) -> None:
        """After the mesh's clean stop: remove the home's cgroup if nothing is left in it."""
        for group in self.leftovers():
            if not group.populated():
                group.release()
        try:
            self.path.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                raise


def wait_unpopulated(group: InstanceCgroup, deadline: float) -> bool:
    """Poll ``cgroup.events`` until nothing is left in the cgroup; False past the deadline."""
    return poll_until(lambda: not group.populated(), deadline)

