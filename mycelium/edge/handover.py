"""Edge workers that outlive their mesh, and the next mesh's handover from them.

After a ``kill -9`` of the mesh its edge workers keep serving the last routes they got (the
workloads outlive the mesh too). Each worker says where it is in the home's run directory
(``<home>/run``): ``edge-<pid>.json``, its :class:`WorkerRecord`, and ``edge-<pid>.sock``, a
unix socket (0600) on which an orphaned worker accepts a new supervisor. The next ``up`` on
the home *adopts* them: it connects, sends its edge config (a worker whose config differs
refuses, and is replaced), takes the worker's last snapshot as the *legacy* routes, and from
then on talks to the worker over that socket exactly as over a pipe (:mod:`.adoption`). No
listening socket ever closes, so no connection is lost in the handover.

The new mesh starts its own instances; until an app has as many Ready endpoints of its own as
the legacy snapshot had, every snapshot sent to the workers is the new table with the app's
legacy endpoints added (:func:`merge_legacy`, :func:`remaining_legacy`). Once no app needs
its legacy endpoints (or :data:`LEGACY_MAX` passed), the workers get the new table alone and
the mesh drains and reaps the old instances.

An orphan that no mesh adopts exits after ``orphan_timeout`` seconds, or as soon as its run
directory is gone (its home was removed): see :func:`orphan_should_exit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import psutil

from .routes import Route, RouteTable

__all__ = ["LEGACY_MAX", "ORPHAN_TIMEOUT", "Legacy", "WorkerRecord", "live_records",
           "merge_legacy", "orphan_should_exit", "remaining_legacy", "stop_orphans",
           "unix_address", "worker_stderr"]

ORPHAN_TIMEOUT = 600.0
"""Seconds an orphaned worker waits for a new mesh before it exits. Long enough for a person
or a service manager (systemd's ``Restart=`` with its backoff) to bring the mesh back; bounded
because nobody supervises the instances it routes to meanwhile."""

LEGACY_MAX = 120.0
"""Seconds at most the new mesh keeps routing to the old instances, whatever its own count:
twice the default rollout timeout, after which a new instance that is not Ready never will be
by the rollout's own rules."""


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """What the next mesh needs to find, check and adopt one edge worker.

    Attributes:
        pid: The worker's pid.
        create_time: Its start time (psutil's): a reused pid is never taken for it.
        socket: Its adoption socket's path.
        port: The edge port it serves.
    """

    pid: int
    create_time: float
    socket: str
    port: int

    @staticmethod
    def path(run_dir: Path, pid: int) -> Path:
        """Where the record of worker ``pid`` lives."""
        return run_dir / f"edge-{pid}.json"

    @staticmethod
    def socket_path(run_dir: Path, pid: int) -> Path:
        """Where the adoption socket of worker ``pid`` lives."""
        return run_dir / f"edge-{pid}.sock"

    def write(self, run_dir: Path) -> None:
        """Write the record atomically (a reader sees all of it or nothing)."""
        target = self.path(run_dir, self.pid)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(dataclasses.asdict(self)))
        os.replace(tmp, target)

    def alive(self) -> bool:
        """Whether the recorded process still runs (same pid, same start, not a zombie)."""
        try:
            proc = psutil.Process(self.pid)
            return (abs(proc.create_time() - self.create_time) < 0.005
                    and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    def forget(self, run_dir: Path) -> None:
        """Remove the record and the socket (the worker is gone)."""
        for path in (self.path(run_dir, self.pid), self.socket_path(run_dir, self.pid)):
            with contextlib.suppress(OSError):
                path.unlink()


def live_records(run_dir: Path) -> list[WorkerRecord]:
    """The workers recorded in ``run_dir`` that still run; the records of dead ones are
    removed."""
    found = []
    for path in sorted(run_dir.glob("edge-*.json")) if run_dir.is_dir() else ():
        try:
            data: dict[str, Any] = orjson.loads(path.read_bytes())
            record = WorkerRecord(int(data["pid"]), float(data["create_time"]),
                                  str(data["socket"]), int(data["port"]))
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if record.alive():
            found.append(record)
        else:
            record.forget(run_dir)
    return found


def stop_orphans(run_dir: Path, records: Iterable[WorkerRecord], grace: float = 5.0
                 ) -> list[int]:
    """SIGTERM the recorded workers (they drain), SIGKILL what is left after ``grace``.

    Returns:
        The pids that were signalled.
    """
    records = [r for r in records if r.alive()]
    for record in records:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for record in records:
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.02)  # not our child: no wait(); its pid vanishes when it exits
        if record.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGKILL)  # a worker leads its own group
        record.forget(run_dir)
    return [r.pid for r in records]


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """``path`` as a unix socket address, for one bind or connect: through ``/proc/self/fd``
    when it is longer than the 107 bytes an address holds (a deep home)."""
    text = str(path)
    if len(text.encode()) < 100:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def remaining_legacy(table: RouteTable, legacy: RouteTable) -> RouteTable:
    """The legacy routes still needed once ``table`` is the new mesh's: an app's stay until
    the new table has at least as many endpoints for it as the legacy snapshot had."""
    return RouteTable({app: route for app, route in legacy.items()
                       if len(table[app].endpoints if app in table else ()) <
                       len(route.endpoints)})


def merge_legacy(table: RouteTable, legacy: RouteTable) -> RouteTable:
    """The snapshot the workers get: ``table`` with the legacy endpoints of each app in
    ``legacy`` added (after the new ones; the new table's route settings win)."""
    if not legacy:
        return table
    merged: dict[str, Route] = dict(table.items())
    for app, old in legacy.items():
        new = merged.get(app)
        if new is None:
            merged[app] = old
            continue
        urls = {ep.url for ep in new.endpoints}
        extra = tuple(ep for ep in old.endpoints if ep.url not in urls)
        merged[app] = dataclasses.replace(new, endpoints=new.endpoints + extra)
    try:
        return RouteTable(merged)
    except Exception:  # two apps claiming one host across the meshes: the new one wins
        return table


class Legacy:
    """The previous mesh's routes that adopted workers serve until ours take over (time is
    passed in)."""

    def __init__(self) -> None:
        self.routes = RouteTable()
        self.urls: tuple[str, ...] = ()  # every legacy endpoint, for the drain
        self.version = -1
        self.until = 0.0

    def __bool__(self) -> bool:
        return bool(self.routes)

    def take(self, snapshot: Mapping[str, Any] | None, now: float) -> None:
        """An adopted worker's last snapshot: the newest one seen becomes the legacy."""
        if not snapshot or int(snapshot["version"]) <= self.version:
            return
        from .worker import routes_from_wire  # the wire format's home

        self.version = int(snapshot["version"])
        self.routes = routes_from_wire(snapshot["routes"])
        self.urls = tuple(sorted({ep.url for route in self.routes.values()
                                  for ep in route.endpoints}))
        self.until = now + LEGACY_MAX

    def snapshot(self) -> dict[str, Any]:
        """The legacy routes as a snapshot (its version: the adopted workers' newest)."""
        from .worker import routes_to_wire

        return {"version": self.version, "routes": routes_to_wire(self.routes), "restarts": {}}

    def expired(self, now: float) -> bool:
        """Whether legacy routes are left past :data:`LEGACY_MAX`."""
        return bool(self.routes) and now >= self.until

    def push(self, table: RouteTable, now: float) -> tuple[RouteTable, tuple[str, ...] | None]:
        """The snapshot to send for ``table``, and the legacy URLs handed over if this push
        is the first without any (else None). An app's legacy, once dropped, never returns."""
        if not self.routes:
            return table, None
        left = RouteTable() if now >= self.until else remaining_legacy(table, self.routes)
        sent = merge_legacy(table, left)
        if left:
            self.routes = left
            return sent, None
        self.routes = RouteTable()
        return sent, self.urls


@contextlib.contextmanager
def worker_stderr(run_dir: Path | None) -> Iterator[IO[bytes] | None]:
    """A worker's stderr: ``<run>/edge-workers.err`` (appended), as a worker that may outlive
    the mesh must not hold the mesh's stderr open; None (inherited) without a run dir."""
    if run_dir is None:
        yield None
        return
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(run_dir / "edge-workers.err", "ab") as err:
        yield err


def orphan_should_exit(now: float, orphaned_at: float | None, timeout: float,
                       run_dir_exists: bool) -> bool:
    """Whether an orphaned worker gives up: its home is gone, or nobody adopted it in time.

    Args:
        now: Monotonic seconds.
        orphaned_at: When it lost its mesh (None: it has one).
        timeout: ``orphan_timeout``.
        run_dir_exists: Whether the home's run directory still exists.
    """
    if orphaned_at is None:
        return False
    return not run_dir_exists or now - orphaned_at >= timeout
