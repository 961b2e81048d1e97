"""Retention of workload output: the newest ``[logs] output_keep`` instances per app and node.

An instance's directory (its output, its exit record) outlives the instance so that ``mycelium
output`` and ``status``'s ``last_exit`` can show how it ended; beyond the newest ``keep`` of an
app on a node, ended ones are removed. The output watcher's thread (:mod:`.output`) runs the
prunes, throttled per app and node; :func:`settle_home` records the end of instances a dead
mesh left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import orjson

from mycelium._logger import get_logger
from mycelium.output_files import (
    EXIT_FILE,
    META_FILE,
    OUTPUT_DIR,
    STREAMS,
    output_tail,
    parse_instance_dir,
    rfc3339,
)
from mycelium.secrets.redact import redact_or_hide

__all__ = ["Prunes", "prune_instances", "settle_home", "write_json"]

log = get_logger(__name__)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a reader never sees half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(dict(data)))
    os.replace(tmp, path)


_PRUNE_EVERY = 1.0
"""Seconds between two prunes of one app on one node: a node starting hundreds of instances
of an app at once would otherwise look at every one of them for each start."""

PruneKey = tuple[Path, str, str]


class Prunes:
    """The prunes asked for, each run by the watcher's thread once its second is over.

    Asking never prunes in the caller's thread (a spawn's launch task, a stop): it only notes
    the wish, and the watcher's next pass runs it, at most once per ``_PRUNE_EVERY`` per app
    and node; a wish inside that second waits for its end, so retention never stays above
    ``keep`` after a burst of starts and stops. No timer is involved: the pass runs anyway.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted: dict[PruneKey, int] = {}
        self._last: dict[PruneKey, float] = {}

    def want(self, key: PruneKey, keep: int) -> bool:
        """Note the wish; True if it is new and may run at once (worth waking the watcher:
        a wish already noted, or inside its second, is run by a later pass anyway)."""
        with self._lock:
            fresh = key not in self._wanted
            self._wanted[key] = keep
            return fresh and (time.monotonic() - self._last.get(key, -_PRUNE_EVERY)
                              >= _PRUNE_EVERY)

    def run_due(self) -> None:
        """Run every wish whose second is over (on the watcher's thread)."""
        now = time.monotonic()
        with self._lock:
            due = [(key, keep) for key, keep in self._wanted.items()
                   if now - self._last.get(key, -_PRUNE_EVERY) >= _PRUNE_EVERY]
            for key, _keep in due:
                del self._wanted[key]
                self._last[key] = now
        for (instances_dir, app, node), keep in due:
            try:
                prune_instances(instances_dir, app, node, keep)
            except Exception:  # the next wish tries again
                log.exception("pruning the output of %s on %s", app, node)


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


def settle_home(instances_dir: Path, secrets_of: Callable[[str], Mapping[str, bytes]],
                names: Collection[str] | None = None) -> list[str]:
    """Record the end of instances a dead mesh left without one (the next ``up`` calls this,
    after their workloads were stopped). Their output, all of it, stays readable.

    Args:
        instances_dir: The home's instance directories.
        secrets_of: An app's secret values, hidden in the recorded tail as an exit recorded by
            a live mesh hides them (when it raises, the tail is replaced by one line that says
            it is hidden).
        names: Only these instance directories (a takeover's old instances), else all.
    """
    settled = []
    opened: dict[str, Mapping[str, bytes] | None] = {}  # by app, once each
    with contextlib.suppress(OSError):
        for entry in os.scandir(instances_dir):
            if names is not None and entry.name not in names:
                continue
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
                write_json(directory / EXIT_FILE, {
                    "instance": str(meta.get("instance", entry.name)),
                    "reason": "its mesh died (stopped at the next up)",
                    "at": rfc3339(max(ends, default=time.time())),
                    "output_tail": redact_or_hide(output_tail(directory), opened[app]),
                    "shutdown": False})
                settled.append(entry.name)
    return settled
