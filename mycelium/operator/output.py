"""Reading and following workloads' output from the home (``mycelium output``).

Everything here reads files the node wrote (:mod:`mycelium.output_files`), so it works the
same with or without a running mesh. The choices are pure functions: which instances are "the
current ones" (:func:`current`), what ``--since`` means (:func:`parse_since`), which kept
instances a command line names (:func:`select`); :class:`Follower` then polls the files and
picks up a replacement instance of the app by itself.
"""

from __future__ import annotations

import heapq
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from mycelium.errors import BadInput
from mycelium.output_files import (
    EXIT_FILE,
    META_FILE,
    OUTPUT_DIR,
    STREAMS,
    Clock,
    Line,
    Stream,
    parse_instance_dir,
    rfc3339,
)

__all__ = ["Follower", "Kept", "OutputLine", "current", "instance_tail", "kept_instances",
           "parse_since", "read_output", "run", "select"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh])$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}
_BACK = 4096


@dataclass(frozen=True, slots=True)
class Kept:
    """One instance whose output the home keeps."""

    instance: str
    app: str
    node: str
    serial: int
    run: int
    directory: Path
    ended: dict[str, Any] | None

    @property
    def shutdown(self) -> bool:
        """It was running when its mesh went down (``down``)."""
        return bool(self.ended and self.ended.get("shutdown"))


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line of output, as ``mycelium output`` prints it."""

    ts: float
    app: str
    node: str
    instance: str
    stream: str
    line: str

    def human(self) -> str:
        """``<ts> <instance> <stream> <line>``."""
        return f"{rfc3339(self.ts)} {self.instance} {self.stream} {self.line}"

    def json(self) -> bytes:
        """One JSON object: ts (RFC 3339), app, node, instance, stream, line."""
        return orjson.dumps({"ts": rfc3339(self.ts), "app": self.app, "node": self.node,
                             "instance": self.instance, "stream": self.stream,
                             "line": self.line})


def parse_since(text: str, now: float) -> float:
    """``10m``, ``30s``, ``2h`` (ago) or an RFC 3339 time, as seconds since the epoch.

    Raises:
        BadInput: anything else.
    """
    match = _DURATION.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise BadInput(f"--since {text!r}: expected a duration such as 30s, 10m, 2h or an "
                       f"RFC 3339 time such as 2026-01-31T12:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def kept_instances(instances_dir: Path, app: str | None = None) -> list[Kept]:
    """Every instance (of ``app``) whose output is kept, oldest first."""
    found = []
    try:
        entries = list(os.scandir(instances_dir))
    except OSError:
        return []
    for entry in entries:
        parsed = parse_instance_dir(entry.name)
        if parsed is None or (app is not None and parsed[0] != app):
            continue
        directory = Path(entry.path) / OUTPUT_DIR
        try:
            meta = orjson.loads((directory / META_FILE).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        try:
            ended = orjson.loads((directory / EXIT_FILE).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            ended = None
        found.append(Kept(str(meta.get("instance", entry.name)), parsed[0], parsed[1],
                          parsed[2], int(meta.get("run", 0)), directory, ended))
    return sorted(found, key=lambda k: k.serial)


def current(kept: list[Kept]) -> list[Kept]:
    """The current instances: those still running; after ``down``, the last that ran.

    Running means no end recorded (a mesh killed with ``kill -9`` records none: its instances
    were the last that ran until the next ``up`` records their end). With none running: the
    ones a ``down`` stopped in the latest run; failing that, the newest instance on each node.
    """
    running = [k for k in kept if k.ended is None]
    if running:
        return running
    if not kept:
        return []
    latest = max(k.run for k in kept)
    downed = [k for k in kept if k.shutdown and k.run == latest]
    if downed:
        return downed
    newest: dict[str, Kept] = {}
    for k in kept:
        newest[k.node] = k
    return sorted(newest.values(), key=lambda k: k.serial)


def select(kept: list[Kept], app: str, node: str | None, instance: str | None) -> list[Kept]:
    """The instances a command line names.

    Raises:
        BadInput: the app, node or instance has no kept output.
    """
    if not kept:
        raise BadInput(f"unknown app {app!r}: no output of it is kept in this home")
    if instance is not None:
        named = [k for k in kept if k.instance == instance]
        if not named:
            raise BadInput(f"unknown instance {instance!r} of {app} (kept: "
                           f"{', '.join(k.instance for k in kept)})")
        if node is not None and named[0].node != node:
            raise BadInput(f"instance {instance!r} ran on {named[0].node}, not {node}")
        return named
    if node is not None:
        kept = [k for k in kept if k.node == node]
        if not kept:
            raise BadInput(f"no output of {app} is kept for node {node!r}")
    return current(kept)


def _lines_of(k: Kept, stream: Stream, lines: list[Line]) -> list[OutputLine]:
    times = Clock(stream).times([line.end for line in lines])
    return [OutputLine(ts, k.app, k.node, k.instance, stream.name,
                       line.text.decode("utf-8", "replace"))
            for ts, line in zip(times, lines, strict=True)]


def _read_stream(k: Kept, stream: Stream, tail: int | None, since: float | None,
                 stops: dict[tuple[str, str], int] | None) -> list[OutputLine]:
    first, end, _mtime = stream.extent()
    if tail is not None:
        lines = stream.tail(tail)
    else:
        # a line that ends after the index record may begin before it: start a little earlier
        wanted = 0 if since is None else max(0, Clock(stream).offset_since(since) - _BACK)
        start = max(first, wanted)
        lines = stream.lines(start, end, partial=True, skip_first=start > 0)[0]
    if stops is not None:  # a follower goes on after the last complete line shown
        if k.ended is None and lines and lines[-1].partial:
            last = lines.pop()
            stops[(k.instance, stream.name)] = last.end - len(last.text)
        else:
            stops[(k.instance, stream.name)] = lines[-1].end if lines else end
    out = _lines_of(k, stream, lines)
    if since is not None:
        out = [line for line in out if line.ts >= since]
    return out


def _by_time(groups: Iterable[list[OutputLine]]) -> list[OutputLine]:
    return list(heapq.merge(*groups, key=lambda line: line.ts))


def read_output(instances: list[Kept], streams: tuple[str, ...] = STREAMS,
                tail: int | None = None, since: float | None = None,
                stops: dict[tuple[str, str], int] | None = None) -> list[OutputLine]:
    """The instances' output, oldest first (``tail``: the last N lines of each instance).

    ``stops``, when given, receives where each stream's read ended, for a :class:`Follower`
    (a running instance's unfinished last line is then left for the follower).
    """
    groups = []
    for k in instances:
        mine = _by_time(_read_stream(k, Stream(k.directory, name), tail, since, stops)
                        for name in streams)
        groups.append(mine[-tail:] if tail is not None else mine)
    return _by_time(groups)


def instance_tail(instances_dir: Path, instance: str, count: int = 5) -> list[str]:
    """The last ``count`` lines of one instance, both streams (the dashboard shows them)."""
    directory = Path(instances_dir) / instance.replace("/", "_") / OUTPUT_DIR
    k = Kept(instance, "", "", 0, 0, directory, None)
    return [line.line for line in read_output([k], tail=count)]


class Follower:
    """Goes on printing: polls the followed streams, and the app's instances for new ones.

    Args:
        instances_dir: The home's instances directory.
        app: The app.
        node: Only this node's instances.
        streams: Which streams.
        known: Every kept instance when the first read chose (later ones are new).
        shown: The instances followed from the start.
        stops: Where the first read of each of their streams ended (see :func:`read_output`).
        pinned: Follow only ``shown`` (``--instance``), never new instances.
    """

    def __init__(self, instances_dir: Path, app: str, node: str | None,
                 streams: tuple[str, ...], known: list[Kept], shown: list[Kept],
                 stops: dict[tuple[str, str], int], pinned: bool = False) -> None:
        self._dir = instances_dir
        self._app = app
        self._node = node
        self._streams = streams
        self._pinned = pinned
        self._known = {k.instance for k in known}
        self._offsets: dict[tuple[str, str], int] = {}
        self._kept: dict[str, Kept] = {}
        for k in shown:
            self._kept[k.instance] = k
            for name in streams:
                self._offsets[(k.instance, name)] = stops.get((k.instance, name), 0)

    def _discover(self) -> None:
        if self._pinned:
            return
        for k in kept_instances(self._dir, self._app):
            if k.instance in self._known or (self._node is not None and k.node != self._node):
                continue
            self._known.add(k.instance)
            self._kept[k.instance] = k
            for name in self._streams:
                self._offsets[(k.instance, name)] = 0

    def poll(self) -> list[OutputLine]:
        """New complete lines since the last poll, oldest first."""
        self._discover()
        groups = []
        for (instance, name), offset in list(self._offsets.items()):
            k = self._kept[instance]
            stream = Stream(k.directory, name)
            first, end, _mtime = stream.extent()
            if end <= offset:
                continue
            ended = (k.directory / EXIT_FILE).exists()
            lines, after = stream.lines(max(offset, first), end, partial=ended,
                                        skip_first=offset < first)
            self._offsets[(instance, name)] = after
            if lines:
                groups.append(_lines_of(k, stream, lines))
        return _by_time(groups)

    def batches(self, interval: float = 0.05) -> Iterator[list[OutputLine]]:
        """The new lines of each poll, as they come (forever; the caller stops on Ctrl-C)."""
        rescan = 0.0
        while True:
            now = time.monotonic()
            batch = self.poll() if now >= rescan else self._poll_known()
            if now >= rescan:
                rescan = now + 0.25
            if batch:
                yield batch
            time.sleep(interval)

    def _poll_known(self) -> list[OutputLine]:
        pinned, self._pinned = self._pinned, True
        try:
            return self.poll()
        finally:
            self._pinned = pinned


def run(instances_dir: Path, app: str, *, node: str | None = None, instance: str | None = None,
        stream: str | None = None, tail: int | None = None, since: str | None = None,
        follow: bool = False, as_json: bool = False) -> None:
    """``mycelium output``: print (and with ``follow`` go on printing) to stdout.

    Raises:
        BadInput: a bad ``stream``, ``tail`` or ``since``; an unknown app, node or instance.
    """
    if stream is not None and stream not in STREAMS:
        raise BadInput(f"--stream {stream!r}: expected stdout or stderr")
    if tail is not None and tail < 0:
        raise BadInput(f"--tail {tail}: expected a number of lines >= 0")
    since_ts = None if since is None else parse_since(since, time.time())
    streams = STREAMS if stream is None else (stream,)
    kept = kept_instances(instances_dir, app)
    chosen = select(kept, app, node, instance)
    stops: dict[tuple[str, str], int] | None = {} if follow else None
    out = sys.stdout.buffer

    def show(lines: list[OutputLine]) -> None:
        out.write(b"".join(line.json() + b"\n" if as_json else line.human().encode() + b"\n"
                           for line in lines))
        out.flush()

    show(read_output(chosen, streams, tail, since_ts, stops))
    if stops is None:
        return
    follower = Follower(instances_dir, app, node, streams, kept, chosen, stops,
                        pinned=instance is not None)
    for batch in follower.batches():
        show(batch)
