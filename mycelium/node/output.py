"""Capturing a workload's stdout and stderr: files it writes itself, indexed and rotated here.

The workload's fd 1 and 2 are regular files opened ``O_APPEND`` in its instance's ``output/``
directory (see :mod:`mycelium.output_files` for the layout). A write to a file never
blocks on a reader and never raises EPIPE, so the workload is never harmed by logging, also
while no mesh runs (after a ``kill -9`` of the mesh its writes simply land in the file).

One watcher thread per process looks at every live stream every ``interval`` seconds (a
``stat``; it never reads the bytes): when a stream grew it appends to the stream's index the
new byte range, the time of its previous look and the file's mtime — each line's timestamp is
interpolated from those — and once the live file holds ``max_bytes`` it rotates it. Rotation
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
import shutil
import threading
import time
from collections.abc import Callable, Mapping
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
    parse_instance_dir,
    rfc3339,
)
from mycelium.secrets.redact import redact_lines, redact_or_hide
from mycelium.secrets.store import SecretValues
from supervisors.singleton import Singleton
from supervisors.timers import shared_timers

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


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(dict(data)))
    os.replace(tmp, path)


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

    def poll(self, last: bool = False) -> None:
        """Index what was written since the last look (rotate if due); ``last``: then stop."""
        with self.lock:
            if not self.closed:
                self.closed = last
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
    """The process's one thread that indexes and rotates every live stream."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tracked: dict[int, list[_Tracked]] = {}
        self.interval = OutputPolicy().interval
        self._thread = threading.Thread(target=self._run, name="mycelium-output", daemon=True)
        self._thread.start()

    def add(self, key: int, tracked: list[_Tracked], interval: float) -> None:
        with self._cond:
            self._tracked[key] = tracked
            self.interval = min(self.interval, interval)

    def remove(self, key: int) -> None:
        """Stop watching; a last look first, so that the index covers every byte."""
        with self._cond:
            tracked = self._tracked.pop(key, [])
        for one in tracked:
            with contextlib.suppress(OSError):
                one.poll(last=True)

    def _run(self) -> None:
        # The pass runs on a copy, outside the lock: a spawn (add) or a stop (remove) never
        # waits for hundreds of stats; each stream's own lock keeps one look at a time.
        while True:
            with self._cond:
                self._cond.wait(self.interval)
                tracked = [t for group in self._tracked.values() for t in group]
            for one in tracked:
                try:
                    one.poll()
                except Exception:  # one odd file must not stop the others' capture
                    log.exception("output of %s", one.stream.live)


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
        self.directory = instance_dir / OUTPUT_DIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self._instances_dir = instance_dir.parent
        self.policy = policy
        self.paths = tuple(self.directory / name for name in STREAMS)
        _write_json(self.directory / META_FILE, {**meta, "started_at": time.time()})
        self._tracked = [_Tracked(Stream(self.directory, name), policy) for name in STREAMS]
        self._exit: dict[str, Any] | None = None
        self._tail: list[str] | None = None
        self._lock = threading.Lock()
        shared_watcher().add(id(self), self._tracked, policy.interval)
        prune_soon(self._instances_dir, str(meta["app"]), str(meta["node"]), policy.keep)

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
                self._exit = {"instance": self.instance, "reason": reason,
                              "at": rfc3339(time.time()), "output_tail": tail,
                              "shutdown": self._instances_dir in _STOPPING}
                with contextlib.suppress(OSError):
                    _write_json(self.directory / EXIT_FILE, self._exit)
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


_PRUNED: dict[tuple[str, str, str], float] = {}
_PRUNE_DUE: set[tuple[str, str, str]] = set()  # a prune waits for the end of its second
_PRUNE_LOCK = threading.Lock()
_PRUNE_EVERY = 1.0
"""Seconds between two prunes of one app on one node: a node starting hundreds of instances
of an app at once would otherwise look at every one of them for each start."""


def prune_soon(instances_dir: Path, app: str, node: str, keep: int) -> list[str]:
    """:func:`prune_instances`, at most once a second per app and node (see ``_PRUNE_EVERY``).

    A call inside the second does not drop the prune: it is done once the second is over (on
    the shared timer), so retention never stays above ``keep`` after a burst of starts.
    """
    key, now = (str(instances_dir), app, node), time.monotonic()
    with _PRUNE_LOCK:
        last = _PRUNED.get(key, -_PRUNE_EVERY)
        if now - last < _PRUNE_EVERY:
            if key not in _PRUNE_DUE:
                _PRUNE_DUE.add(key)
                shared_timers().call_later(last + _PRUNE_EVERY - now, lambda: _due(
                    key, instances_dir, app, node, keep))
            return []
        _PRUNED[key] = now
    return prune_instances(instances_dir, app, node, keep)


def _due(key: tuple[str, str, str], instances_dir: Path, app: str, node: str,
         keep: int) -> None:
    with _PRUNE_LOCK:
        _PRUNE_DUE.discard(key)
        _PRUNED[key] = time.monotonic()
    prune_instances(instances_dir, app, node, keep)


def prune_instances(instances_dir: Path, app: str, node: str, keep: int) -> list[str]:
    """Drop the output of ``app``'s instances on ``node`` beyond the newest ``keep``.

    A directory is only removed once its instance ended (its exit is recorded), so a live one
    (a blue beside its green) is never touched. Returns the dropped directory names.
    """
    mine = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(instances_dir):
            parsed = parse_instance_dir(entry.name)
            if parsed is not None and parsed[0] == app and parsed[1] == node:
                mine.append((parsed[2], entry.name))
    mine.sort(reverse=True)
    dropped = []
    for _serial, name in mine[max(keep, 1):]:
        path = Path(instances_dir) / name
        ended = (path / OUTPUT_DIR / EXIT_FILE).exists() or not (path / OUTPUT_DIR).exists()
        if ended and not (path / "process.json").exists():
            shutil.rmtree(path, ignore_errors=True)
            dropped.append(name)
    return dropped


def settle_home(instances_dir: Path,
                secrets_of: Callable[[str], Mapping[str, bytes]]) -> list[str]:
    """Record the end of instances a dead mesh left without one (the next ``up`` calls this,
    after their workloads were stopped). Their output, all of it, stays readable.

    Args:
        instances_dir: The home's instance directories.
        secrets_of: An app's secret values, hidden in the recorded tail as an exit recorded by
            a live mesh hides them (when it raises, the tail is replaced by one line that says
            it is hidden).
    """
    settled = []
    opened: dict[str, Mapping[str, bytes] | None] = {}  # by app, once each
    with contextlib.suppress(OSError):
        for entry in os.scandir(instances_dir):
            directory = Path(entry.path) / OUTPUT_DIR
            if not (directory / META_FILE).exists() or (directory / EXIT_FILE).exists():
                continue
            ends = [os.stat(p).st_mtime for p in (directory / s for s in STREAMS) if p.exists()]
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                meta = orjson.loads((directory / META_FILE).read_bytes())
                app = str(meta.get("app", entry.name.split("@", 1)[0]))
                if app not in opened:
                    try:
                        opened[app] = secrets_of(app)
                    except Exception:  # whatever failed: its tails are hidden, not shown
                        opened[app] = None
                _write_json(directory / EXIT_FILE, {
                    "instance": str(meta.get("instance", entry.name)),
                    "reason": "its mesh died (stopped at the next up)",
                    "at": rfc3339(max(ends, default=time.time())),
                    "output_tail": redact_or_hide(output_tail(directory), opened[app]),
                    "shutdown": False})
                settled.append(entry.name)
    return settled
