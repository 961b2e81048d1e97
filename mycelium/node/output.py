"""Capturing a workload's stdout and stderr: files it writes itself, indexed and rotated here.

The workload's fd 1 and 2 are regular files opened ``O_APPEND`` in its instance's ``output/``
directory (see :mod:`mycelium.output_files` for the layout). A write to a file never
blocks on a reader and never raises EPIPE, so the workload is never harmed by logging, also
while no mesh runs (after a ``kill -9`` of the mesh its writes simply land in the file).

One watcher thread per process looks, every ``interval`` seconds, at each live stream that
was written since its previous pass (the kernel says which: :mod:`.inotify`; a ``stat``, it
never reads the bytes): when a stream grew it appends to the stream's index the new byte
range, the time it was last known unchanged and the file's mtime — each line's timestamp is
interpolated from those — and once the live file holds ``max_bytes`` it rotates it. The same
thread prunes old instances' output (:mod:`.retention`). Rotation
copies the file's head into a segment and then removes that head from the live file with
``fallocate(FALLOC_FL_COLLAPSE_RANGE)``: the kernel does that under the inode lock the
workload's appends take, so no write is lost or misplaced (an ``O_APPEND`` write always goes
to the current end). Filesystems without it (tmpfs) fall back to copy-then-truncate, which
can lose what is written in the microseconds between.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mycelium._logger import get_logger
from mycelium.messages import LastExit
from mycelium.output_files import (
    EXIT_FILE,
    INDEX_RECORD,
    META_FILE,
    OUTPUT_DIR,
    STREAMS,
    TAIL_LINES,
    Stream,
    output_tail,
    rfc3339,
)
from mycelium.secrets.redact import redact_lines
from mycelium.secrets.store import SecretValues
from supervisors.singleton import Singleton

from .inotify import open_inotify
from .retention import Prunes, prune_instances, settle_home, write_json
from .serials import current_run

__all__ = ["EXIT_FILE", "META_FILE", "OUTPUT_DIR", "Capture", "OutputPolicy", "prune_instances",
           "read_last_exit", "rfc3339", "settle_home"]

log = get_logger(__name__)

_FALLOC_FL_COLLAPSE_RANGE = 0x08

_libc: Any = None


@dataclass(frozen=True, slots=True)
class OutputPolicy:
    """How much output is kept (the config's ``[logs] output_*`` keys)."""

    max_bytes: int = 10 * 1024 * 1024
    files: int = 5
    keep: int = 5
    interval: float = 0.25


def _collapse(fd: int, length: int) -> bool:
    """Remove the first ``length`` bytes of the file in place; False if unsupported."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if _libc.fallocate(fd, _FALLOC_FL_COLLAPSE_RANGE, 0, length) == 0:
        return True
    err = ctypes.get_errno()
    if err not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
        raise OSError(err, os.strerror(err))
    return False


def _copy(src: int, dst: int, offset: int, count: int) -> int:
    """Copy ``count`` bytes of ``src`` from ``offset`` to the end of ``dst``, in the kernel."""
    done = 0
    while done < count:
        try:
            n = os.copy_file_range(src, dst, count - done, offset + done)
        except OSError:
            n = os.sendfile(dst, src, offset + done, count - done)
        if n <= 0:
            break
        done += n
    return done


class _Tracked:
    """The watcher's state for one live stream.

    It holds no file open between looks (a ``stat`` by path, the index opened to append):
    hundreds of instances must not cost the mesh four descriptors each.
    """

    def __init__(self, stream: Stream, policy: OutputPolicy) -> None:
        self.stream = stream
        self.policy = policy
        os.close(os.open(stream.live, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        os.close(os.open(stream.index_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self.base = stream.base()
        self.size = 0
        self.seen = time.time()  # every byte past base + size was written after this
        self.lock = threading.Lock()  # the watcher's pass and the last look never overlap
        self.closed = False

    def poll(self, last: bool = False, quiet_since: float = 0.0) -> None:
        """Index what was written since the last look (rotate if due); ``last``: then stop.

        ``quiet_since``: nothing was written to the stream before that time since the last
        look (the watcher's previous inotify drain saw no write of it).
        """
        with self.lock:
            if not self.closed:
                self.closed = last
                self.seen = max(self.seen, quiet_since)
                self._poll()

    def _poll(self) -> None:
        st = os.stat(self.stream.live)
        now = time.time()  # after the stat: this record's mtime never passes the next's start
        if st.st_size > self.size:  # written after the last look, by the file's mtime
            record = INDEX_RECORD.pack(self.base + self.size, self.base + st.st_size, self.seen,
                                       max(st.st_mtime, self.seen))
            fd = os.open(self.stream.index_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                os.write(fd, record)
            finally:
                os.close(fd)
        self.size = st.st_size
        self.seen = now
        if self.size >= self.policy.max_bytes:
            self.rotate()

    def rotate(self) -> None:
        """Move the live file's head into segments of ``max_bytes`` (block-aligned) each,
        until it holds less than that; drop the segments beyond ``files - 1``."""
        stream = self.stream
        with stream.locked(exclusive=True, wait=False) as ours:
            if not ours:
                return  # a reader is busy with it: next time
            fd = os.open(stream.live, os.O_RDWR | os.O_CLOEXEC)
            try:
                block = max(os.fstat(fd).st_blksize, 4096)
                chunk = max(block, self.policy.max_bytes // block * block)
                while True:
                    size = os.fstat(fd).st_size
                    if size < self.policy.max_bytes or size <= chunk:
                        break
                    self._move_head(fd, chunk)
                self.size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            segments = stream.segments()
            for _start, old in segments[:max(0, len(segments) - (self.policy.files - 1))]:
                with contextlib.suppress(OSError):
                    old.unlink()
            self._trim_index()

    def _move_head(self, fd: int, length: int) -> None:
        stream = self.stream
        segment = stream.directory / f"{stream.name}.{self.base}"
        out = os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _copy(fd, out, 0, length)
            if not _collapse(fd, length):  # copy-then-truncate: see the module's docstring
                now = os.fstat(fd).st_size
                length += _copy(fd, out, length, now - length)
                os.ftruncate(fd, 0)
        finally:
            os.close(out)
        self.base += length
        _write_text(stream.base_path, str(self.base))

    def _trim_index(self) -> None:
        first = self.stream.segments()
        keep_from = first[0][0] if first else self.base
        raw = self.stream.index_path.read_bytes()
        raw = raw[:len(raw) - len(raw) % INDEX_RECORD.size]
        kept = [rec for rec in INDEX_RECORD.iter_unpack(raw) if rec[1] > keep_from]
        tmp = self.stream.index_path.with_name(self.stream.index_path.name + ".tmp")
        tmp.write_bytes(b"".join(INDEX_RECORD.pack(*rec) for rec in kept))
        os.replace(tmp, self.stream.index_path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Watcher:
    """The process's one thread that indexes and rotates every live stream, and prunes.

    Each pass looks only at the streams the kernel says were written since the previous pass
    (:mod:`.inotify`; every stream where it cannot say), and runs the prunes that are due.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tracked: dict[int, list[_Tracked]] = {}
        self._watches: dict[int, _Tracked] = {}  # inotify watch descriptor → its stream
        self._unwatched: set[_Tracked] = set()  # looked at on every pass
        self._notify = open_inotify()
        self._drained = time.time()  # every write before this had its event read
        self.interval = OutputPolicy().interval
        self.prunes = Prunes()
        self._thread = threading.Thread(target=self._run, name="mycelium-output", daemon=True)
        self._thread.start()

    def add(self, key: int, tracked: list[_Tracked], interval: float) -> None:
        watched = {}
        for one in tracked:
            if self._notify is not None:
                with contextlib.suppress(OSError):  # not watched: looked at on every pass
                    watched[self._notify.watch(one.stream.live)] = one
        with self._cond:
            self._tracked[key] = tracked
            self._watches.update(watched)
            self._unwatched.update(t for t in tracked if t not in watched.values())
            self.interval = min(self.interval, interval)

    def remove(self, key: int) -> None:
        """Stop watching; a last look first, so that the index covers every byte."""
        with self._cond:
            tracked = self._tracked.pop(key, [])
            wds = [wd for wd, one in self._watches.items() if one in tracked]
            for wd in wds:
                del self._watches[wd]
            self._unwatched.difference_update(tracked)
        for wd in wds:
            assert self._notify is not None
            self._notify.unwatch(wd)
        for one in tracked:
            with contextlib.suppress(OSError):
                one.poll(last=True)

    def wake(self) -> None:
        """Run a pass now (a prune was asked for)."""
        with self._cond:
            self._cond.notify()

    def _looks(self) -> tuple[list[_Tracked], float]:
        """The streams to look at in this pass, and since when the others were quiet."""
        with self._cond:
            if self._notify is None:
                return [t for group in self._tracked.values() for t in group], 0.0
            quiet_since, self._drained = self._drained, time.time()
            changed = self._notify.changed()  # after the time: a later write is in the next
            if changed is None:  # the kernel's queue overflowed: look at every stream
                return [t for group in self._tracked.values() for t in group], 0.0
            due = [self._watches[wd] for wd in changed if wd in self._watches]
            return due + list(self._unwatched), quiet_since

    def _run(self) -> None:
        # The pass runs outside the lock: a spawn (add) or a stop (remove) never waits for the
        # looks; each stream's own lock keeps one look at a time.
        while True:
            with self._cond:
                self._cond.wait(self.interval)
            tracked, quiet_since = self._looks()
            for one in tracked:
                try:
                    one.poll(quiet_since=quiet_since)
                except Exception:  # one odd file must not stop the others' capture
                    log.exception("output of %s", one.stream.live)
            self.prunes.run_due()


shared_watcher = Singleton(_Watcher)
"""The process-wide output watcher, started on first use."""

_STOPPING: set[Path] = set()


def mesh_stopping(instances_dir: Path, stopping: bool = True) -> None:
    """The mesh of ``instances_dir`` is shutting down: exits now are "the last that ran"."""
    if stopping:
        _STOPPING.add(Path(instances_dir))
    else:
        _STOPPING.discard(Path(instances_dir))


class Capture:
    """One instance's captured output (made before the spawn, closed once it stopped).

    Args:
        instance_dir: The instance's directory in the home.
        meta: What readers need to find it: instance, app, node, digest, seq, run.
        policy: Rotation and retention.
        secrets: The instance's secret values: hidden in its exit's output tail (a workload
            that prints its own secret must not put it into the mesh's records).
    """

    def __init__(self, instance_dir: Path, meta: Mapping[str, Any], policy: OutputPolicy,
                 secrets: Mapping[str, bytes] | None = None) -> None:
        self._secrets = SecretValues(secrets or {})
        self.instance = str(meta["instance"])
        self._app, self._node = str(meta["app"]), str(meta["node"])
        self.directory = instance_dir / OUTPUT_DIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self._instances_dir = instance_dir.parent
        self.policy = policy
        self.paths = tuple(self.directory / name for name in STREAMS)
        write_json(self.directory / META_FILE, {**meta, "started_at": time.time()})
        self._tracked = [_Tracked(Stream(self.directory, name), policy) for name in STREAMS]
        self._exit: dict[str, Any] | None = None
        self._tail: list[str] | None = None
        self._lock = threading.Lock()
        shared_watcher().add(id(self), self._tracked, policy.interval)
        prune_soon(self._instances_dir, self._app, self._node, policy.keep)

    @classmethod
    def of(cls, instance_dir: Path, instance: str, spec: Any,
           secrets: Mapping[str, bytes] | None = None) -> Capture:
        """The capture of one instance of ``spec`` (an :class:`InstanceSpec`)."""
        return cls(instance_dir, {"instance": instance, "app": spec.app, "node": spec.node,
                                  "digest": spec.digest, "child": spec.child,
                                  "run": current_run(spec.instances_dir)}, spec.output, secrets)

    def tail(self, count: int = TAIL_LINES) -> list[str]:
        """The last lines of stderr, or of stdout when stderr is empty."""
        return output_tail(self.directory, count)

    def exit_tail(self) -> list[str]:
        """The tail for the instance's exit: read once, the same in its report and its record."""
        with self._lock:
            if self._tail is None:
                self._tail = redact_lines(self.tail(), self._secrets)
            return self._tail

    def close(self, reason: str) -> dict[str, Any]:
        """Record the instance's end (idempotent); returns ``last_exit``."""
        tail = self.exit_tail()
        with self._lock:
            if self._exit is None:
                shared_watcher().remove(id(self))
                stopping = self._instances_dir in _STOPPING
                self._exit = {"instance": self.instance, "reason": reason,
                              "at": rfc3339(time.time()), "output_tail": tail,
                              "shutdown": stopping}
                with contextlib.suppress(OSError):
                    write_json(self.directory / EXIT_FILE, self._exit)
                if not stopping:  # a down stops only the newest: nothing beyond keep ends
                    prune_soon(self._instances_dir, self._app, self._node, self.policy.keep)
            return dict(self._exit)


def read_last_exit(instances_dir: Path, instance: str) -> LastExit | None:
    """The recorded end of ``instance`` (None if unknown or still running)."""
    path = Path(instances_dir) / instance.replace("/", "_") / OUTPUT_DIR / EXIT_FILE
    try:
        data = orjson.loads(path.read_bytes())
        return LastExit(str(data["instance"]), str(data["reason"]), str(data["at"]),
                        tuple(str(line) for line in data.get("output_tail") or ()))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None


def prune_soon(instances_dir: Path, app: str, node: str, keep: int) -> None:
    """:func:`prune_instances` soon, on the output watcher's thread (see :class:`_Prunes`).

    Asked when an instance starts (it may push an ended one beyond ``keep``) and when one ends
    (it may be beyond ``keep`` already: a blue that stops after its green started). The
    watcher is woken only for a wish that can run now: a mass start of 300 instances woke it
    for a pass per start, each a drain of the output's events while the launches ran.
    """
    watcher = shared_watcher()
    if watcher.prunes.want((Path(instances_dir), app, node), keep):
        watcher.wake()


