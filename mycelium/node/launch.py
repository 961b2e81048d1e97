"""What an instance's launch task does around the spawn: retry a busy binary, note the record.

Plain functions with no actor state, used by :class:`~mycelium.node.instance.AppInstance`'s
launch task (on the launch pool, never in an actor's turn).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from mycelium.node.process import ProcessError, Workload, spawn

__all__ = ["spawn_retrying", "write_record"]


def spawn_retrying(argv: list[str], directory: Path, env: dict[str, str],
                    output: tuple[Path, ...]) -> Workload:
    """Spawn, retrying briefly on ETXTBSY.

    Another thread's fork may briefly hold a copy of the descriptor that wrote this binary (a
    sibling instance extracting while we fork), which makes exec fail with "Text file busy"
    until that child has exec'd; it clears within milliseconds.
    """
    for attempt in range(50):
        try:
            return spawn(argv, cwd=directory / "app", env=env, log_path=(output[0], output[1]))
        except ProcessError as exc:
            if "busy" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.005)
    raise AssertionError("unreachable")


def write_record(path: Path, workload: Workload) -> None:
    """Note the workload's ProcessRecord so that a later ``up`` can reap it after a crash.

    Written atomically (rename) but not fsynced: the record only matters while the workload
    outlives the mesh, which a kill -9 of the mesh allows (the page cache survives it) and a
    machine crash does not (no workload survives that either). Hundreds of fsyncs during a
    mass start would otherwise queue behind each other and behind the fabric's plan writes.
    """
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps(workload.record().to_dict()))
    finally:
        os.close(fd)
    os.replace(tmp, path)
