"""The on-disk form of a workload's captured output: one stream's files, index and reads.

Both sides use it: the node (:mod:`mycelium.node.output`) that rotates and indexes the files
while the mesh runs, and ``mycelium output`` (:mod:`mycelium.operator.output`), which reads the
home with or without a running mesh (standard library only: the CLI starts fast). A stream
(``stdout`` or ``stderr``) of one instance is, in
``<instance dir>/output/``:

- ``<stream>``: the live file. It *is* the workload's fd 1 or 2 (opened ``O_APPEND``), so the
  workload never blocks on a reader and never sees EPIPE, whether or not a mesh runs.
- ``<stream>.<start>``: rotated segments, ``start`` being the logical offset of their first
  byte in the stream (every byte the workload ever wrote to it, in order).
- ``<stream>.base``: the logical offset of the live file's first byte (absent = 0).
- ``<stream>.idx``: 32-byte records ``(start, end, lo, hi)``: the bytes ``[start, end)`` were
  written after ``lo`` (the node's previous look) and by ``hi`` (the live file's mtime when it
  looked); seconds since the epoch. A line's time is interpolated by offset within its record
  (a steady writer's lines come out evenly spaced, the last one at the mtime); lines past the
  last record (written while no mesh indexed) are spread the same way up to the live file's
  mtime.

Offsets are logical throughout, so rotation never invalidates the index or a follower's place.
A rotation holds an exclusive ``flock`` on the ``.base`` file while it moves bytes; readers hold
a shared one while they read, so they never see a half-moved file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXIT_FILE", "INDEX_RECORD", "META_FILE", "OUTPUT_DIR", "STREAMS", "TAIL_LINES",
           "Clock", "Line", "Stream", "output_tail", "parse_instance_dir", "rfc3339",
           "split_lines"]

OUTPUT_DIR = "output"
"""An instance directory's subdirectory with its output."""
META_FILE = "meta.json"
"""Who the instance is: instance, app, node, digest, child, run, started_at."""
EXIT_FILE = "exit.json"
"""How it ended: instance, reason, at, output_tail, shutdown (a ``down`` stopped it)."""
TAIL_LINES = 10
_TAIL_CHARS = 4096
STREAMS = ("stdout", "stderr")
INDEX_RECORD = struct.Struct("<qqdd")
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a stream: where it ends (logical offset past its newline) and its bytes."""

    end: int
    text: bytes
    partial: bool = False


def split_lines(data: bytes, start: int, skip_first: bool = False,
                partial: bool = False) -> list[Line]:
    """The lines of ``data`` (logical offset ``start``).

    ``skip_first`` drops the piece before the first newline (a line whose head was not read);
    ``partial`` keeps an unfinished last line.
    """
    pos = 0
    if skip_first:
        pos = data.find(b"\n") + 1
        if pos == 0:
            return []
    out: list[Line] = []
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        out.append(Line(start + nl + 1, data[pos:nl]))
        pos = nl + 1
    if partial and pos < len(data):
        out.append(Line(start + len(data), data[pos:], partial=True))
    return out


class Stream:
    """One stream of one instance on disk (cheap to make: it opens nothing until read)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.live = directory / name
        self.index_path = directory / f"{name}.idx"
        self.base_path = directory / f"{name}.base"

    # -- layout -------------------------------------------------------------------------------

    def base(self) -> int:
        """The logical offset of the live file's first byte."""
        try:
            return int(self.base_path.read_text() or "0")
        except (OSError, ValueError):
            return 0

    def segments(self) -> list[tuple[int, Path]]:
        """The rotated segments as ``(start, path)``, oldest first."""
        found = []
        prefix = self.name + "."
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.directory):
                tail = entry.name[len(prefix):]
                if entry.name.startswith(prefix) and tail.isdigit():
                    found.append((int(tail), Path(entry.path)))
        return sorted(found)

    @contextlib.contextmanager
    def locked(self, exclusive: bool = False, wait: bool = True) -> Iterator[bool]:
        """Hold the stream's rotation lock; yields False if ``wait`` is off and it is busy."""
        try:
            fd = os.open(self.base_path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # a read-only home: nothing rotates it either
            yield True
            return
        try:
            mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def extent(self) -> tuple[int, int, float]:
        """``(first kept offset, end offset, live mtime)`` of the stream, logical."""
        with self.locked():
            return self._extent()

    def _extent(self) -> tuple[int, int, float]:
        base = self.base()
        try:
            st = os.stat(self.live)
            size, mtime = st.st_size, st.st_mtime
        except OSError:
            size, mtime = 0, 0.0
        segments = self.segments()
        first = segments[0][0] if segments else base
        return first, base + size, mtime

    # -- bytes --------------------------------------------------------------------------------

    def read(self, start: int, end: int) -> bytes:
        """The logical bytes ``[start, end)`` that are still kept (dropped ones are skipped)."""
        with self.locked():
            return self._read(start, end)

    def _read(self, start: int, end: int) -> bytes:
        base = self.base()
        parts: list[bytes] = []
        pieces = [*self.segments(), (base, self.live)]
        for i, (seg_start, path) in enumerate(pieces):
            seg_end = pieces[i + 1][0] if i + 1 < len(pieces) else end
            lo, hi = max(start, seg_start), min(end, seg_end)
            if lo >= hi:
                continue
            with contextlib.suppress(OSError), open(path, "rb") as fh:
                fh.seek(lo - seg_start)
                parts.append(fh.read(hi - lo))
        return b"".join(parts)

    def lines(self, start: int, end: int, partial: bool = False,
              skip_first: bool = False) -> tuple[list[Line], int]:
        """Complete lines in ``[start, end)`` and the offset after the last one.

        ``skip_first``: ``start`` may be inside a line (whose head was dropped or is not
        wanted): begin after the first newline. An unfinished last line is left for later
        unless ``partial``.
        """
        with self.locked():
            first = self._extent()[0]
            if start < first:  # dropped by rotation meanwhile: go on from what is kept
                start, skip_first = first, True
            data = self._read(start, end)
        lines = split_lines(data, start, skip_first=skip_first, partial=partial)
        return lines, (lines[-1].end if lines else start)

    def tail(self, count: int) -> list[Line]:
        """The last ``count`` lines, read backwards from the end (a seek, not a full read).

        An unfinished last line counts as a line: the tail shows what was written.
        """
        if count <= 0:
            return []
        with self.locked():
            first, end, _mtime = self._extent()
            pieces: list[bytes] = []
            pos, newlines = end, 0
            while pos > first and newlines <= count:
                lo = max(first, pos - _CHUNK)
                piece = self._read(lo, pos)
                if not piece:
                    break
                newlines += piece.count(b"\n")
                pieces.insert(0, piece)
                pos = lo
        lines = split_lines(b"".join(pieces), pos, skip_first=pos > first, partial=True)
        return lines[-count:]

class Clock:
    """Times the lines of one stream from its index, without reading all of it.

    The index holds ``(start, end, lo, hi)`` records sorted by offset and time; a line's time
    is interpolated within the record that holds its end. One bisection (a few ``pread``
    calls) finds where a batch of lines starts; later records are read forward in blocks.
    """

    _BLOCK = 4096

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        _first, self._end, self._mtime = stream.extent()

    def _records(self, fd: int, first: int, count: int) -> list[tuple[int, int, float, float]]:
        raw = os.pread(fd, count * INDEX_RECORD.size, first * INDEX_RECORD.size)
        usable = len(raw) - len(raw) % INDEX_RECORD.size
        return list(INDEX_RECORD.iter_unpack(raw[:usable]))

    def _bisect(self, fd: int, total: int, key: float, field: int) -> int:
        """The first record whose ``field`` (1 end, 3 hi) is >= ``key``."""
        lo, hi = 0, total
        while lo < hi:
            mid = (lo + hi) // 2
            if self._records(fd, mid, 1)[0][field] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def times(self, ends: list[int]) -> list[float]:
        """The time of each line, given the lines' ends in ascending order."""
        if not ends:
            return []
        try:
            fd = os.open(self._stream.index_path, os.O_RDONLY)
        except OSError:
            fd = -1
        try:
            total = os.fstat(fd).st_size // INDEX_RECORD.size if fd >= 0 else 0
            i = self._bisect(fd, total, ends[0], 1) if total else 0
            block: list[tuple[int, int, float, float]] = []
            last: tuple[int, int, float, float] | None = None
            if total and i > 0:
                last = self._records(fd, i - 1, 1)[0]
            out: list[float] = []
            floor = 0.0
            for end in ends:
                while True:
                    if not block and i < total:
                        block = self._records(fd, i, self._BLOCK)
                        block.reverse()
                        i += len(block)
                    if not block:  # past the index: spread up to the live file's mtime
                        start = last[1] if last else 0
                        lo = last[3] if last else self._mtime
                        record = (start, max(self._end, end), lo, max(self._mtime, lo))
                        break
                    if block[-1][1] >= end:
                        record = block[-1]
                        break
                    last = block.pop()
                start, stop, lo, hi = record
                share = (end - start) / (stop - start) if stop > start else 1.0
                floor = max(floor, min(hi, lo + (hi - lo) * min(1.0, max(0.0, share))))
                out.append(floor)
            return out
        finally:
            if fd >= 0:
                os.close(fd)

    def offset_since(self, ts: float) -> int:
        """A logical offset before every line written at or after ``ts`` (0 if unknown)."""
        try:
            fd = os.open(self._stream.index_path, os.O_RDONLY)
        except OSError:
            return 0
        try:
            total = os.fstat(fd).st_size // INDEX_RECORD.size
            i = self._bisect(fd, total, ts, 3)
            if i < total:
                return int(self._records(fd, i, 1)[0][0])
            return int(self._records(fd, total - 1, 1)[0][1]) if total else 0
        finally:
            os.close(fd)


def rfc3339(ts: float) -> str:
    """``2026-12-06T20:41:07.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def parse_instance_dir(name: str) -> tuple[str, str, int] | None:
    """``app@node#serial`` → ``(app, node, serial)``; None for other names."""
    head, sep, serial = name.rpartition("#")
    app, at, node = head.partition("@")
    if not sep or not at or not serial.isdigit():
        return None
    return app, node, int(serial)


def output_tail(directory: Path, count: int = TAIL_LINES) -> list[str]:
    """The last ``count`` lines an instance wrote to stderr (stdout when stderr is empty)."""
    for name in ("stderr", "stdout"):
        lines = Stream(directory, name).tail(count)
        if lines:
            return [line.text.decode("utf-8", "replace")[:_TAIL_CHARS] for line in lines]
    return []
