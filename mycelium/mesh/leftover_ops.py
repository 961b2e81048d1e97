"""``down`` when no mesh runs but a killed one left things running on this machine.

After a ``kill -9`` of the mesh its edge workers keep serving (see
:mod:`mycelium.edge.handover`) and its workloads keep running, so that the next ``up`` takes
over without a failed request. ``down`` then means what it always means, that nothing of the
home runs afterwards: under the home lock (so that no ``up`` starts meanwhile) it stops the
orphaned edge workers and reaps the workloads exactly as the next ``up`` would. Their ends are
recorded by that next ``up``, which opens the secrets their output tails must hide.
"""

from __future__ import annotations

from dataclasses import dataclass

from mycelium.edge.handover import live_records, stop_orphans
from mycelium.home import Home
from mycelium.node.cgroups import CgroupTree
from mycelium.node.instance import RECORD_FILE
from mycelium.node.isolation import Isolation
from mycelium.node.leftovers import reap_home
from mycelium.operator import MeshConfig

from .lock import HomeLock

__all__ = ["LeftBehind", "stop_left_behind"]


@dataclass(frozen=True, slots=True)
class LeftBehind:
    """What :func:`stop_left_behind` stopped: edge worker pids and workload pids."""

    workers: tuple[int, ...]
    workloads: tuple[int, ...]

    def __bool__(self) -> bool:
        return bool(self.workers or self.workloads)


def stop_left_behind(home: Home, config: MeshConfig) -> LeftBehind:
    """Stop the edge workers and workloads a killed mesh of ``home`` left running.

    Raises:
        MeshLocked: a mesh runs on the home after all (it started meanwhile).
        CgroupError: ``[node] cgroup`` names no writable cgroup v2 directory.
    """
    lock = HomeLock(home)
    lock.acquire()
    try:
        run_dir = home.root / "run"
        workers = stop_orphans(run_dir, live_records(run_dir))
        if not workers and not any(home.instances.glob(f"*/{RECORD_FILE}")):
            return LeftBehind((), ())  # nothing ran: change nothing (no uid range claimed)
        iso = Isolation.resolve(home.root, run_as=config.node.run_as, path=config.node.path,
                                nofile=config.node.nofile,
                                instances_dir=config.node.instances_dir)
        cgroups = CgroupTree.detect(home.root, config.node.cgroup)
        workloads = reap_home(home, iso.instances_dir, iso.uids, cgroups)
        return LeftBehind(tuple(workers), tuple(workloads))
    finally:
        lock.release()
