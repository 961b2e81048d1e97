"""Reading /proc for the process supervision: one process's stat, its children, a group's life.

Cheap, event-free reads (no scan of every process except where the group has no other
witness), shared by :mod:`mycelium.node.process` and its leftovers' reaping; and the one
backing-off poll that every "wait until these processes are gone" uses (a process group, a
jail, a cgroup: the stop paths have no event to wait on).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import psutil

__all__ = ["children", "environ_has", "group_alive", "poll_until", "read_stat",
           "wait_group_gone"]

#: How often a stop first re-checks whether its processes are gone (no event exists for that);
#: the period doubles from there up to 50 ms.
GROUP_POLL = 0.005


def children(pid: int) -> list[int]:
    """Direct children's pids, from /proc/PID/task/*/children (no scan of every process)."""
    pids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", "rb") as fh:
                pids.extend(int(p) for p in fh.read().split())
    except FileNotFoundError:  # gone, or a kernel without CONFIG_PROC_CHILDREN
        with contextlib.suppress(psutil.Error):
            return [child.pid for child in psutil.Process(pid).children()]
        return []
    except OSError:
        return []
    return pids


def read_stat(pid: int) -> tuple[int, int, int] | None:
    """``(pgrp, rss_pages, utime+stime ticks)`` of a live process; None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ... utime(14) stime(15) ... rss(24)": comm may hold ") ".
    fields = stat[stat.rfind(b")") + 2:].split()
    if len(fields) < 22 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[2]), int(fields[21]), int(fields[11]) + int(fields[12])


def group_alive(pgid: int) -> bool:
    """True while a process that is not a zombie is in the group.

    ``killpg(pgid, 0)`` answers first and cheaply; it also succeeds on zombies, which stay around
    when PID 1 does not reap orphans (common in containers), so a yes is confirmed from /proc.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def poll_until(done: Callable[[], bool], deadline: float) -> bool:
    """Poll ``done`` until it is true (True), or until ``deadline`` (monotonic) passed (False).

    The period starts at :data:`GROUP_POLL`, so a stop that is quick is seen quickly, and
    doubles up to 50 ms, so a slow one does not spin.
    """
    delay = GROUP_POLL
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)
    return True


def wait_group_gone(pgid: int, deadline: float) -> bool:
    """Poll (no event exists for it) until the group is empty; False if the deadline passed."""
    return poll_until(lambda: not group_alive(pgid), deadline)


def environ_has(pid: str, needle: bytes) -> bool:
    """True if process ``pid``'s environment contains ``needle`` (False if it is gone or
    unreadable); a needle that starts with NUL also matches the first variable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return needle in b"\0" + fh.read()
    except OSError:
        return False
