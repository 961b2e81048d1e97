"""What a dead mesh left behind on this machine: find it and stop it (crash safety).

A workload outlives a kill -9 of the mesh (it runs in its own session). Each instance keeps its
workload's ProcessRecord in its directory while the workload runs; the next ``up`` on the home
stops every recorded group that still runs (create time checked, so a reused pid is never
touched), every process left in this home's cgroup, every process of this home's dynamic uid
range, every process whose ``HOME`` is an instance's (see :mod:`.containment`) and any process
still running inside an instance directory, before the tree starts. Their ends are recorded
once the mesh's secrets can be opened (:func:`record_leftover_ends`): a recorded tail hides the
app's secret values.

When the killed mesh's edge workers still serve those workloads, and the next ``up`` adopts
the workers (see :mod:`mycelium.edge.handover`), the reap waits: :func:`survey_home` notes
every leftover process now (before the new mesh starts any), the new mesh keeps their uids
out of its pool, and :meth:`Leftovers.reap` stops exactly those processes (and whatever runs
under their uids, in their cgroups or in their directories) once the new instances took
over the routes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil

from mycelium.home import Home

from .cgroups import CgroupTree, InstanceCgroup, wait_unpopulated
from .containment import Jail, kill_all, reap_contained, scan, wait_empty
from .instance import RECORD_FILE
from .output import mesh_stopping, settle_home
from .process import ProcessRecord, reap_leftovers
from .procfs import environ_has
from .serials import begin_run
from .uids import UidRange

__all__ = ["Leftovers", "reap_home", "record_leftover_ends", "survey_home"]


def _reap_strays(dirs: tuple[Path, ...]) -> list[int]:
    """Kill workloads whose record was never written (a crash between spawn and record).

    Any process still running in one of this home's instance directories is one of them.
    """
    roots = tuple(str(d) + os.sep for d in dirs)
    strays = []
    for proc in psutil.process_iter(["pid", "cwd"]):
        cwd = proc.info.get("cwd")
        if cwd and (cwd + os.sep).startswith(roots):
            pid = int(proc.info["pid"])
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
                strays.append(pid)
    return strays


def reap_home(home: Home, workdirs: Path | None = None, uids: UidRange | None = None,
              cgroups: CgroupTree | None = None) -> list[int]:
    """Stop every workload a previous mesh of this home left behind and clear their dirs;
    then begin this mesh's run of instance serials. Their ends are recorded later, by
    :func:`record_leftover_ends`.

    Args:
        home: The mesh home.
        workdirs: Where the workloads' own directories are (``[node] instances_dir``; default
            and usually ``<home>/instances``).
        uids: This home's dynamic uid range, if workloads run under one.
        cgroups: This home's cgroup v2 tree, if workloads run in one: whatever is left in its
            instances' cgroups is killed and those cgroups removed.

    Returns:
        The pids that were still running and were stopped.
    """
    records: list[ProcessRecord] = []
    if home.instances.is_dir():
        for record_file in home.instances.glob(f"*/{RECORD_FILE}"):
            with contextlib.suppress(Exception):
                records.append(ProcessRecord.from_dict(orjson.loads(record_file.read_bytes())))
    pids = reap_leftovers(records) if records else []
    if cgroups is not None:
        pids += [pid for pid in cgroups.reap() if pid not in pids]
    workdirs = home.instances if workdirs is None else workdirs
    pids += [pid for pid in reap_contained(uids, str(workdirs)) if pid not in pids]
    pids += [pid for pid in _reap_strays((home.instances, workdirs)) if pid not in pids]
    for directory in {home.instances, workdirs}:
        for child in directory.iterdir() if directory.is_dir() else ():
            for part in ("app", "home", "tmp", "credentials"):
                shutil.rmtree(child / part, ignore_errors=True)
            with contextlib.suppress(OSError):
                (child / RECORD_FILE).unlink()
            if directory != home.instances:
                with contextlib.suppress(OSError):
                    child.rmdir()
    begin_run(home.instances)
    mesh_stopping(home.instances, False)
    return pids


def record_leftover_ends(home: Home, secrets_of: Callable[[str], Mapping[str, bytes]]
                         ) -> list[str]:
    """Record the end of each instance :func:`reap_home` stopped (or found dead); their
    output, all of it, stays readable. Call it before the tree starts.

    Args:
        home: The mesh home.
        secrets_of: An app's secret values (the mesh's store, open by now): hidden in each
            recorded output tail; when it raises, that app's tails are not kept at all.

    Returns:
        The instance directories whose end was recorded.
    """
    return settle_home(home.instances, secrets_of) if home.instances.is_dir() else []


@dataclass(frozen=True, slots=True)
class _Old(Jail):
    """The processes of a previous mesh's instances: their uids (none of ours has one of
    them: they are kept out of the pool) or a ``HOME`` in one of their directories."""

    uids: frozenset[int]
    prefixes: tuple[bytes, ...]

    def match(self, pid: str, uids: tuple[int, ...]) -> bool:
        if any(u in self.uids for u in uids[:2]):
            return True
        if not self.prefixes:
            return False
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = b"\0" + fh.read()
        except OSError:
            return False
        return any(prefix in env for prefix in self.prefixes)


@dataclass(frozen=True, slots=True)
class Leftovers:
    """What a killed mesh left running, noted before this mesh started anything.

    Attributes:
        records: The workloads' process records.
        pids: Every leftover process found, with its start time (a reused pid is spared).
        uids: Their dynamic uids (this mesh hands none of them out until they are reaped).
        dirs: The instance directories that existed then (this mesh's are new serials).
        output_dir: The home's instances directory (where their output stays).
        groups: Their cgroups, where workloads run in one (this mesh's are new ones).
    """

    records: tuple[ProcessRecord, ...]
    pids: tuple[tuple[int, float], ...]
    uids: frozenset[int]
    dirs: tuple[Path, ...]
    output_dir: Path
    groups: tuple[InstanceCgroup, ...] = ()

    def reap(self, secrets_of: Callable[[str], Mapping[str, bytes]]) -> list[int]:
        """Stop all of it (SIGTERM to the recorded groups and a grace, then SIGKILL to what
        is left), clear the old instances' directories and record their ends (``secrets_of``
        as for :func:`record_leftover_ends`); returns the pids stopped."""
        pids = reap_leftovers(self.records) if self.records else []
        alive = []
        for pid, created in self.pids:
            with contextlib.suppress(psutil.Error):
                if abs(psutil.Process(pid).create_time() - created) < 0.005:
                    alive.append(pid)
        pids += [p for p in kill_all(alive, signal.SIGKILL) if p not in pids]
        for group in self.groups:
            pids += [p for p in group.signal(signal.SIGKILL) if p not in pids]
        for group in self.groups:
            wait_unpopulated(group, time.monotonic() + 5.0)
            group.release()
        jail = _Old(self.uids, tuple(f"\0HOME={d}{os.sep}".encode() for d in self.dirs))
        deadline = time.monotonic() + 5.0
        while hit := jail.signal(signal.SIGKILL):
            pids += [p for p in hit if p not in pids]
            if wait_empty(jail, min(deadline, time.monotonic() + 0.5)) or \
                    time.monotonic() >= deadline:
                break
        pids += [p for p in _reap_strays(self.dirs) if p not in pids]
        _clear(self.dirs, self.output_dir, secrets_of)
        return pids


def _clear(dirs: Iterable[Path], output_dir: Path,
           secrets_of: Callable[[str], Mapping[str, bytes]]) -> None:
    """Clear what instances kept in their directories; their output (in ``output_dir``, the
    home's instances) stays, settled."""
    settle: dict[Path, set[str]] = {}
    for child in dirs:
        for part in ("app", "home", "tmp", "credentials"):
            shutil.rmtree(child / part, ignore_errors=True)
        with contextlib.suppress(OSError):
            (child / RECORD_FILE).unlink()
        if child.parent != output_dir:
            with contextlib.suppress(OSError):
                child.rmdir()
        settle.setdefault(child.parent, set()).add(child.name)
    for parent, names in settle.items():
        settle_home(parent, secrets_of, names)


def survey_home(home: Home, workdirs: Path | None = None, uids: UidRange | None = None,
                cgroups: CgroupTree | None = None) -> Leftovers:
    """Note what a killed mesh of this home left running, stopping nothing; then begin this
    mesh's run of instance serials (as :func:`reap_home` does).

    Args:
        home: The mesh home.
        workdirs: ``[node] instances_dir`` (default ``<home>/instances``).
        uids: This home's dynamic uid range, if workloads run under one.
        cgroups: This home's cgroup v2 tree, if workloads run in one.
    """
    groups = tuple(cgroups.leftovers()) if cgroups is not None else ()
    records: list[ProcessRecord] = []
    if home.instances.is_dir():
        for record_file in home.instances.glob(f"*/{RECORD_FILE}"):
            with contextlib.suppress(Exception):
                records.append(ProcessRecord.from_dict(orjson.loads(record_file.read_bytes())))
    workdirs = home.instances if workdirs is None else workdirs
    dirs = tuple(sorted({child for directory in {home.instances, workdirs}
                         if directory.is_dir() for child in directory.iterdir()
                         if child.is_dir()}))
    prefix = f"\0HOME={str(workdirs).rstrip(os.sep)}{os.sep}".encode()
    roots = tuple(str(d) + os.sep for d in (home.instances, workdirs))
    found: dict[int, float] = {}
    owners: set[int] = set()
    candidates = {r.pid for r in records} | {p for g in groups for p in g.procs()}
    candidates |= set(scan(lambda pid, ids: (uids is not None and any(u in uids for u in ids[:2]))
                           or environ_has(pid, prefix)))
    for proc in psutil.process_iter(["pid", "cwd"]):
        cwd = proc.info.get("cwd")
        if cwd and (cwd + os.sep).startswith(roots):
            candidates.add(int(proc.info["pid"]))
    for pid in candidates:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            found[pid] = proc.create_time()
            owners |= {u for u in proc.uids()[:2] if uids is not None and u in uids}
    begin_run(home.instances)
    mesh_stopping(home.instances, False)
    return Leftovers(tuple(records), tuple(sorted(found.items())), frozenset(owners), dirs,
                     home.instances, groups)


