"""Instance serial numbers that are never reused over a home's life, across mesh restarts.

An instance id is ``<app>@<node>#<serial>``; ``mycelium output --instance`` must always name
one instance, so a serial is never handed out twice for a home. Serials are reserved in blocks:
the home's ``instances/.serial`` file holds the first number not yet reserved and the number of
the mesh run, and is rewritten (atomically) once per block, not once per instance. A mesh killed
mid-block leaves a gap, never a repeat. Each ``up`` starts a new run (:func:`begin_run`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["SERIAL_FILE", "begin_run", "current_run", "next_serial"]

SERIAL_FILE = ".serial"
_BLOCK = 1000

_lock = threading.Lock()
_state: dict[Path, list[int]] = {}  # instances dir → [next, limit, run]


def _read(directory: Path) -> tuple[int, int]:
    """(first unreserved serial, run) from the file; a home without one starts past any id
    already on disk (a home from before serials were kept)."""
    try:
        first, run = (int(x) for x in (directory / SERIAL_FILE).read_text().split()[:2])
        return first, run
    except (OSError, ValueError):
        pass
    highest = 0
    try:
        for name in os.listdir(directory):
            tail = name.rpartition("#")[2]
            if tail.isdigit():
                highest = max(highest, int(tail))
    except OSError:
        pass
    return highest + 1, 0


def _write(directory: Path, first: int, run: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (SERIAL_FILE + ".tmp")
    tmp.write_text(f"{first} {run}\n")
    os.replace(tmp, directory / SERIAL_FILE)


def begin_run(instances_dir: Path) -> int:
    """A mesh starts on this home: a fresh block and the next run number; returns the run."""
    directory = Path(instances_dir)
    with _lock:
        first, run = _read(directory)
        _write(directory, first + _BLOCK, run + 1)
        _state[directory] = [first, first + _BLOCK, run + 1]
        return run + 1


def current_run(instances_dir: Path) -> int:
    """The run of the mesh now using this home in this process (0 before :func:`begin_run`)."""
    with _lock:
        state = _state.get(Path(instances_dir))
        return state[2] if state else _read(Path(instances_dir))[1]


def next_serial(instances_dir: Path) -> int:
    """The next serial for an instance in this home (thread-safe)."""
    directory = Path(instances_dir)
    with _lock:
        state = _state.get(directory)
        if state is None:
            first, run = _read(directory)
            state = _state[directory] = [first, first, run]
        if state[0] >= state[1]:
            first = max(_read(directory)[0], state[0])
            _write(directory, first + _BLOCK, state[2])
            state[0], state[1] = first, first + _BLOCK
        serial = state[0]
        state[0] += 1
        return serial
