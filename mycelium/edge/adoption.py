"""The adopting side of a handover: a new mesh's pool takes over a killed mesh's workers.

:func:`adopt_orphans` connects to each live worker recorded in the home's run directory and
asks; an orphan with our config answers with its pid, port and last snapshot and from then on
speaks to us over that socket. :class:`AdoptedWorker` is that worker as the pool sees it (the
part of :class:`subprocess.Popen` it uses), :class:`Takeover` the pool's bookkeeping: the
legacy routes, the orphans to replace, and the one call of the mesh's hook once the old
instances may go. The run-dir records and the pure rules are in :mod:`.handover`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from mycelium._logger import get_logger

from .handover import Legacy, WorkerRecord, live_records, stop_orphans, unix_address

__all__ = ["AdoptedWorker", "Takeover", "adopt_orphans", "ask_adoption"]

log = get_logger(__name__)


class AdoptedWorker:
    """A worker a previous mesh started, adopted over its socket: the part of
    :class:`subprocess.Popen` the pool uses (it is not our child: its exit is seen through a
    pidfd, and its exit status is not ours to read)."""

    def __init__(self, pid: int, conn: socket.socket, reader: IO[bytes]) -> None:
        self.pid = pid
        self._conn = conn
        self.stdin: IO[bytes] | None = conn.makefile("wb")
        self.stdout: IO[bytes] | None = reader  # what it sent after its answer is buffered here
        self._pidfd = os.pidfd_open(pid)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the exit (None: its status is unknown here).

        Raises:
            subprocess.TimeoutExpired: Still running after ``timeout``.
        """
        if timeout is None:  # its link closed: it is exiting, or stuck; never wait forever
            if not select.select([self._pidfd], [], [], 5.0)[0]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                select.select([self._pidfd], [], [], 5.0)
        elif not select.select([self._pidfd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(f"edge worker {self.pid}", timeout)
        with contextlib.suppress(OSError):
            self._conn.close()
        return None

    def send_signal(self, sig: int) -> None:
        """Signal the worker (through its pidfd: never a process that reused its pid)."""
        signal.pidfd_send_signal(self._pidfd, sig)


def ask_adoption(record: WorkerRecord, hello: bytes
                 ) -> tuple[socket.socket, IO[bytes], dict[str, Any]] | None:
    """Connect to an orphan and ask; the link, its reader (the answer read off it, nothing
    after it) and the answer, or None if it refused."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(10.0)
        with unix_address(Path(record.socket)) as address:
            conn.connect(address)
        conn.sendall(hello)
        reader = conn.makefile("rb")
        line = reader.readline()
        answer = orjson.loads(line) if line else {}
    except (OSError, orjson.JSONDecodeError) as exc:
        log.info("edge worker %d not adopted: %s", record.pid, exc)
        conn.close()
        return None
    if "adopted" not in answer:
        log.info("edge worker %d not adopted: %s", record.pid, answer.get("refused"))
        conn.close()
        return None
    conn.settimeout(None)
    return conn, reader, dict(answer["adopted"])


def adopt_orphans(run_dir: Path, config: Mapping[str, Any], slots: int, *, allowed: bool = True
                  ) -> tuple[list[tuple[WorkerRecord, AdoptedWorker, dict[str, Any]]],
                             list[WorkerRecord]]:
    """Ask the live workers recorded in ``run_dir`` to be adopted, ``slots`` of them at most.

    Args:
        run_dir: The home's run directory.
        config: Our workers' config as on the wire (an orphan with another one refuses).
        slots: How many workers we run.
        allowed: False to adopt none (e.g. ``port = 0``: ours would be another port).

    Returns:
        ``(adopted, refused)``: each adopted worker with its record and its answer (pid,
        port, version, snapshot); the records of the others, which the caller stops once its
        own workers listen.
    """
    hello = orjson.dumps({"adopt": dict(config)}) + b"\n"
    adopted: list[tuple[WorkerRecord, AdoptedWorker, dict[str, Any]]] = []
    refused: list[WorkerRecord] = []
    for record in live_records(run_dir):
        answer = ask_adoption(record, hello) if allowed and len(adopted) < slots else None
        if answer is None:
            refused.append(record)
            continue
        conn, reader, data = answer
        try:
            adopted.append((record, AdoptedWorker(record.pid, conn, reader), data))
        except OSError:  # it exited since it answered
            conn.close()
    return adopted, refused


class Takeover:
    """One worker pool's side of a handover: what it adopted, what it replaces, and the hook
    told once the old instances may go.

    Args:
        run_dir: The home's run directory (None: no adoption, nothing to hand over).
        on_handover: Told the legacy URLs once no worker routes to them (or ``()`` at once
            when nothing was adopted).
    """

    def __init__(self, run_dir: Path | None,
                 on_handover: Callable[[tuple[str, ...]], None] | None) -> None:
        self.run_dir = run_dir
        self.legacy = Legacy()
        self._hook = on_handover
        self._refused: list[WorkerRecord] = []
        self._done = False

    def adopt(self, config: Mapping[str, Any], slots: int, allowed: bool
              ) -> list[tuple[WorkerRecord, AdoptedWorker, dict[str, Any]]]:
        """Adopt what :func:`adopt_orphans` can; the newest snapshot becomes the legacy."""
        if self.run_dir is None:
            return []
        adopted, self._refused = adopt_orphans(self.run_dir, config, slots, allowed=allowed)
        for _record, _proc, answer in adopted:
            self.legacy.take(answer.get("snapshot"), time.monotonic())
        return adopted

    def started(self, wait_applied: Callable[[int, float], bool]) -> None:
        """Our workers listen: stop the orphans we did not adopt; with no legacy, hand over
        at once (the old instances have nobody left to serve)."""
        refused, self._refused = self._refused, []
        if refused and self.run_dir is not None:
            threading.Thread(target=stop_orphans, args=(self.run_dir, refused),
                             name="edge-replaced", daemon=True).start()
        if not self.legacy:
            self.hand_over((), -1, wait_applied)

    def hand_over(self, urls: tuple[str, ...], version: int,
                  wait_applied: Callable[[int, float], bool]) -> None:
        """Once every worker applied ``version`` (the first without legacy routes), tell the
        hook, once, on a thread of its own (it drains and reaps: seconds)."""
        if self._done:
            return
        self._done = True
        hook = self._hook

        def run() -> None:
            if version >= 0:
                wait_applied(version, 5.0)
            if hook is not None:
                hook(urls)

        threading.Thread(target=run, name="edge-handover", daemon=True).start()
