"""The supervision log: one JSON object per line, rotated, readable while written.

Records are supervisor events (OTP's progress, crash and supervisor reports) with at least
``ts`` (RFC 3339), ``event``, ``supervisor`` (path in the tree), ``child``, ``app`` (null for
mesh actors), ``reason`` (may be null) and ``delay`` (seconds, for ``backoff``). The log lives in
``<home>/logs/supervision.jsonl`` so it survives a restart of the mesh.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from mycelium.errors import MyceliumError
from mycelium.home import Home
from supervisors.reports import EVENT_COLORS, rfc3339

__all__ = ["LOG_NAME", "LogError", "SupervisionLog", "format_record", "normalise_record"]

LOG_NAME = "supervision.jsonl"

#: Seconds between two looks at the file while following it (``tail -f`` polls too).
FOLLOW_POLL = 0.1

_DIM, _RED, _RESET = "\x1b[2m", "\x1b[31m", "\x1b[0m"


class LogError(MyceliumError):
    """The supervision log cannot be written (disk full, permissions)."""


def normalise_record(record: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A log record from a dict or anything with ``to_dict()`` (e.g. ``supervisors.Report``).

    Guarantees the documented keys: ``ts`` becomes RFC 3339 (an epoch float is converted, a
    missing one is now), ``app`` is taken from ``extra["app"]`` when not given, and ``supervisor``,
    ``child``, ``reason``, ``delay`` default to null.

    Raises:
        LogError: the record has no ``event``.
    """
    data = dict(record.to_dict() if hasattr(record, "to_dict") else record)
    if not data.get("event"):
        raise LogError(f"supervision log record without an event: {data!r}")
    ts = data.get("ts")
    if ts is None:
        data["ts"] = rfc3339(time.time())
    elif isinstance(ts, int | float):
        data["ts"] = rfc3339(float(ts))
    extra = data.get("extra")
    if "app" not in data:
        data["app"] = extra.get("app") if isinstance(extra, Mapping) else None
    for key in ("supervisor", "child", "reason", "delay"):
        data.setdefault(key, None)
    return data


class SupervisionLog:
    """Append-only JSON-lines log with size-based rotation; thread-safe.

    ``supervision.jsonl`` rotates to ``supervision.jsonl.1`` (then ``.2`` …, ``keep`` files) once
    the next record would push it over ``rotate_bytes``.
    """

    def __init__(self, home: Home | Path, rotate_bytes: int = 10 * 1024 * 1024,
                 keep: int = 5, *, name: str = LOG_NAME) -> None:
        """Open (lazily) the log of ``home``; ``name`` picks another log of the same kind in
        ``<home>/logs`` (the edge's access log is rotated and followed the same way).

        Raises:
            LogError: ``rotate_bytes`` < 1 or ``keep`` < 0.
        """
        if rotate_bytes < 1 or keep < 0:
            raise LogError(f"supervision log: rotate_bytes must be >= 1 and keep >= 0, "
                           f"got {rotate_bytes} and {keep}")
        home = home if isinstance(home, Home) else Home(Path(home))
        self.name = name
        self.path: Path = home.logs / name
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0

    def files(self) -> list[Path]:
        """The log's files, oldest first (rotated ones, then the current one), existing only."""
        rotated = [self.path.with_name(f"{self.name}.{n}") for n in range(self.keep, 0, -1)]
        return [p for p in [*rotated, self.path] if p.exists()]

    def write(self, record: Mapping[str, Any] | Any) -> None:
        """Append one record (a dict, or a ``supervisors.Report``) as one line, flushed.

        Raises:
            LogError: the record has no event, or the file cannot be written.
        """
        data = normalise_record(record)
        try:
            line = orjson.dumps(data, default=str) + b"\n"
        except orjson.JSONEncodeError:  # e.g. an int beyond 64 bits: the slow, lenient encoder
            line = json.dumps(data, default=str, ensure_ascii=False).encode() + b"\n"
        self.write_lines(line)

    def write_lines(self, line: bytes) -> None:
        """Append encoded JSON lines (each ending in a newline) in one write, flushed.

        Raises:
            LogError: the file cannot be written.
        """
        with self._lock:
            try:
                if self._file is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
                    self._size = self._file.tell()
                if self._size and self._size + len(line) > self.rotate_bytes:
                    self._rotate()
                assert self._file is not None
                self._file.write(line)
                self._file.flush()
                self._size += len(line)
            except OSError as exc:
                raise LogError(f"cannot write the supervision log {self.path}: {exc}") from exc

    def _rotate(self) -> None:
        """Shift .N-1 → .N … current → .1 (lock held), dropping what falls beyond ``keep``."""
        assert self._file is not None
        self._file.close()
        self._file = None
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            self.path.with_name(f"{self.name}.{self.keep}").unlink(missing_ok=True)
            for n in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.name}.{n}")
                if older.exists():
                    older.rename(self.path.with_name(f"{self.name}.{n + 1}"))
            self.path.rename(self.path.with_name(f"{self.name}.1"))
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
        self._size = 0

    def close(self) -> None:
        """Close the file; a later :meth:`write` opens it again."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def read(self, app: str | None = None) -> Iterator[dict[str, Any]]:
        """Every record, oldest first across rotated files; only ``app``'s if given.

        Lines that are not JSON objects (a torn last line) are skipped.
        """
        for path in self.files():
            yield from _read_path(path, app)

    def follow(self, app: str | None = None, stop: threading.Event | None = None, *,
               history: bool = True, poll: float = FOLLOW_POLL) -> Iterator[dict[str, Any]]:
        """Like ``tail -f``: the records so far (``history``), then each new one as it lands.

        Survives rotation: when the followed file is renamed away, the rest of it is read, then
        any rotated file newer than it, then the new current file from its start. Without
        ``history`` the stream starts at the end of the log as it is when ``follow`` is called.
        The iterator ends once ``stop`` is set (checked every ``poll`` seconds while idle);
        without ``stop`` it runs until the caller stops iterating.
        """
        start: tuple[int, int] | None = None
        if not history:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self.path)
                start = (st.st_ino, st.st_size)
        return self._follow(app, stop or threading.Event(), history, start, poll)

    def _follow(self, app: str | None, stop: threading.Event, history: bool,
                start: tuple[int, int] | None, poll: float) -> Iterator[dict[str, Any]]:
        fh: IO[bytes] | None = None
        inode = -1  # the followed file; -1: none yet, so every file is newer
        partial = b""
        if not history and start is None:
            start = (-2, 0)  # no log yet: whatever appears from now on is new
        try:
            while not stop.is_set():
                if fh is None:
                    if start is not None and start[0] >= 0:
                        try:  # without history: the current file, from its size at follow()
                            fh = open(self.path, "rb")  # noqa: SIM115 - closed in finally
                        except FileNotFoundError:
                            start = None
                            continue
                        inode = os.fstat(fh.fileno()).st_ino
                        if inode == start[0]:
                            fh.seek(start[1])
                        start = None
                    else:
                        # History, or files written since: every file newer than the one
                        # followed so far, found by inode and opened before it is read.
                        start = None
                        opened = self._open_newer(inode)
                        if not opened:
                            stop.wait(poll)
                            continue
                        for older in opened[:-1]:
                            with older:
                                yield from _read_lines(older.read(), app)
                        fh = opened[-1]
                        inode = os.fstat(fh.fileno()).st_ino
                chunk = fh.read()
                if chunk:
                    lines = (partial + chunk).split(b"\n")
                    partial = lines.pop()
                    for line in lines:
                        record = _parse(line)
                        if record is not None and _matches(record, app):
                            yield record
                    continue
                try:
                    rotated = os.stat(self.path).st_ino != inode
                except FileNotFoundError:
                    rotated = True
                if rotated:  # the old file was fully read just now: go on with the newer ones
                    fh.close()
                    fh, partial = None, b""
                    continue
                stop.wait(poll)
        finally:
            if fh is not None:
                fh.close()

    def _open_newer(self, inode: int) -> list[IO[bytes]]:
        """Open every log file newer than the one with ``inode``, oldest first.

        Files are told apart by inode, not by name, and opened before they are read: the
        writer may rotate (rename every file) at any moment. A scan during which any name
        changed its inode is thrown away and done again, so no file is skipped or read twice.
        """
        names = [self.path.with_name(f"{self.name}.{n}") for n in range(self.keep, 0, -1)]
        names.append(self.path)
        for _ in range(100):
            opened: list[tuple[Path, IO[bytes], int]] = []
            for path in names:
                try:
                    handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 - returned or closed
                except FileNotFoundError:
                    continue
                opened.append((path, handle, os.fstat(handle.fileno()).st_ino))
            if all(_inode(path) == ino for path, _fh, ino in opened):
                inodes = [ino for _path, _fh, ino in opened]
                keep_from = inodes.index(inode) + 1 if inode in inodes else 0
                for _path, stale, _ino in opened[:keep_from]:
                    stale.close()
                return [handle for _path, handle, _ino in opened[keep_from:]]
            for _path, stale, _ino in opened:  # a rotation happened during the scan: again
                stale.close()
        return []


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return -1


def _read_lines(data: bytes, app: str | None) -> Iterator[dict[str, Any]]:
    for line in data.split(b"\n"):
        record = _parse(line)
        if record is not None and _matches(record, app):
            yield record


def _read_path(path: Path, app: str | None) -> Iterator[dict[str, Any]]:
    """The records of one file (gone already: none), torn lines skipped."""
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
        for line in fh:
            record = _parse(line)
            if record is not None and _matches(record, app):
                yield record


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _matches(record: Mapping[str, Any], app: str | None) -> bool:
    return app is None or record.get("app") == app


def _clock(ts: Any) -> str:
    """``HH:MM:SS.mmm`` in local time from an RFC 3339 string or epoch seconds."""
    try:
        if isinstance(ts, int | float):
            moment = datetime.fromtimestamp(float(ts), tz=UTC)
        else:
            moment = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
        return moment.astimezone().strftime("%H:%M:%S.%f")[:-3]
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ts)


def format_record(rec: Mapping[str, Any], color: bool = False) -> str:
    """One short human line per record, OTP-report style.

    E.g. ``02:41:07.123 mesh/nodes/node-1/apps/hello child_terminated hello@node-1#3
    app=hello reason="killed by SIGKILL" pid=4242 restarts=2`` and, for backoff, ``delay=0.400s``.
    Control characters in values (newlines, escape sequences) are shown escaped, so one record
    is one line and cannot drive the terminal — except that a ``child_terminated`` of an app
    instance is followed by the last lines its workload wrote (``output_tail``), each on a
    line of its own, indented (``    | …``).

    Args:
        rec: A record as written by :class:`SupervisionLog` (``extra`` keys are looked at too).
        color: ANSI colours (event by kind, failure reasons in red) for a terminal.
    """
    raw_extra = rec.get("extra")
    extra: Mapping[str, Any] = raw_extra if isinstance(raw_extra, Mapping) else {}

    def pick(key: str) -> Any:
        value = rec.get(key)
        return extra.get(key) if value is None else value

    event = _show(rec.get("event", "?"))
    clock = _show(_clock(rec.get("ts")))
    parts = [clock, _show(rec.get("supervisor") or "-")]
    parts.append(f"{EVENT_COLORS.get(event, '')}{event}{_RESET}" if color else event)
    if rec.get("child") is not None:
        parts.append(_show(rec["child"]))
    for key in ("app",):
        if pick(key) is not None:
            parts.append(f"{key}={_quote(_show(pick(key)))}")
    reason = rec.get("reason")
    if reason is not None:
        text = f"reason={_quote(_show(reason))}"
        failed = event in ("child_terminated", "start_error", "reached_max_restart_intensity")
        parts.append(f"{_RED}{text}{_RESET}" if color and failed and reason != "normal"
                     else text)
    for key in ("pid", "restarts"):
        if pick(key) is not None:
            parts.append(f"{key}={_quote(_show(pick(key)))}")
    delay = rec.get("delay")
    if isinstance(delay, int | float) and not isinstance(delay, bool):
        parts.append(f"delay={delay:.3f}s")
    line = " ".join(parts)
    if color:
        line = f"{_DIM}{clock}{_RESET}{line[len(clock):]}"
    tail = extra.get("output_tail")
    if event == "child_terminated" and isinstance(tail, list) and tail:
        shown = [f"    | {_show(text)}" for text in tail]
        line += "\n" + "\n".join(f"{_DIM}{text}{_RESET}" if color else text for text in shown)
    return line


def _show(value: Any) -> str:
    """``str(value)`` with every non-printable character escaped (``\\n``, ``\\x1b``)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _quote(text: str) -> str:
    """Quote a value with spaces so that the line stays splittable by eye (and by shlex)."""
    return f'"{text}"' if " " in text or not text else text
