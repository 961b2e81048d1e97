"""What a dead mesh left behind on this machine: find it and stop it (crash safety).

A workload outlives a kill -9 of the mesh (it runs in its own session). Each instance keeps its
workload's ProcessRecord in its directory while the workload runs; the next ``up`` on the home
stops every recorded group that still runs (create time checked, so a reused pid is never
touched) and any process still running inside an instance directory, before the tree starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal

import orjson
import psutil

from mycelium.home import Home

from .instance import RECORD_FILE
from .output import mesh_stopping, settle_home
from .process import ProcessRecord, reap_leftovers
from .serials import begin_run

__all__ = ["reap_home"]


def _reap_strays(home: Home) -> list[int]:
    """Kill workloads whose record was never written (a crash between spawn and record).

    Any process still running in one of this home's instance directories is one of them.
    """
    root = str(home.instances) + os.sep
    strays = []
    for proc in psutil.process_iter(["pid", "cwd"]):
        cwd = proc.info.get("cwd")
        if cwd and (cwd + os.sep).startswith(root):
            pid = int(proc.info["pid"])
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
                strays.append(pid)
    return strays


def reap_home(home: Home) -> list[int]:
    """Stop every workload a previous mesh of this home left behind and clear their dirs;
    then begin this mesh's run of instance serials.

    Returns:
        The pids that were still running and were stopped.
    """
    records: list[ProcessRecord] = []
    if home.instances.is_dir():
        for record_file in home.instances.glob(f"*/{RECORD_FILE}"):
            with contextlib.suppress(Exception):
                records.append(ProcessRecord.from_dict(orjson.loads(record_file.read_bytes())))
    pids = reap_leftovers(records) if records else []
    pids += _reap_strays(home)
    if home.instances.is_dir():
        for child in home.instances.iterdir():
            shutil.rmtree(child / "app", ignore_errors=True)
            with contextlib.suppress(OSError):
                (child / RECORD_FILE).unlink()
        settle_home(home.instances)  # their output stays readable, their end is recorded
    begin_run(home.instances)
    mesh_stopping(home.instances, False)
    return pids
