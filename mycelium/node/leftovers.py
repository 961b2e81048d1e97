"""What a dead mesh left behind on this machine: find it and stop it (crash safety).

A workload outlives a kill -9 of the mesh (it runs in its own session). Each instance keeps its
workload's ProcessRecord in its directory while the workload runs; the next ``up`` on the home
stops every recorded group that still runs (create time checked, so a reused pid is never
touched), every process left in this home's cgroup, every process of this home's dynamic uid
range, every process whose ``HOME`` is an instance's (see :mod:`.containment`) and any process
still running inside an instance directory, before the tree starts. Their ends are recorded
once the mesh's secrets can be opened (:func:`record_leftover_ends`): a recorded tail hides the
app's secret values.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

import orjson
import psutil

from mycelium.home import Home

from .cgroups import CgroupTree
from .containment import reap_contained
from .instance import RECORD_FILE
from .output import mesh_stopping, settle_home
from .process import ProcessRecord, reap_leftovers
from .serials import begin_run
from .uids import UidRange

__all__ = ["reap_home", "record_leftover_ends"]


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
