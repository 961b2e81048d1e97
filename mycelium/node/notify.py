"""systemd's sd_notify protocol, served to workloads: one datagram socket per instance.

A daemon written for systemd ``Type=notify`` finds ``NOTIFY_SOCKET`` in its environment and
sends it datagrams of ``KEY=VALUE`` lines: ``READY=1``, ``STATUS=…``, ``WATCHDOG=1``,
``STOPPING=1``. Each instance gets its own socket, in its directory (mode 0600); where that
path would be too long for a unix socket address (108 bytes) an abstract name is used instead
(``@mycelium-notify/…``, which sd_notify clients accept too).

Only datagrams from the workload count: the socket asks the kernel for the sender's
credentials (``SO_PASSCRED``), and a datagram is dropped unless its pid is the workload's or a
process of its process group or one of its descendants. One thread serves every socket of the
mesh under epoll and reads at most :data:`BATCH` datagrams of one socket in a row, merging them
into one :class:`Notice`: a workload that floods its socket costs that thread some CPU and
delays no other workload's notices (and its datagrams beyond the socket's buffer are dropped
by the kernel, or block the sender).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from mycelium._logger import get_logger
from supervisors.singleton import Singleton

from .selectloop import SelectLoop

__all__ = ["BATCH", "Notice", "NotifySocket", "parse_notice", "shared_notifier"]

log = get_logger(__name__)

BATCH = 64
_MAX_DATAGRAM = 4096
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_SUN_PATH = 107  # sun_path holds 108 bytes with its NUL


@dataclass(frozen=True, slots=True)
class Notice:
    """What some datagrams said, merged: the last ``STATUS=`` wins, the flags add up."""

    ready: bool = False
    status: str | None = None
    watchdog: bool = False
    stopping: bool = False

    def merge(self, other: Notice) -> Notice:
        """Both notices in one (``other`` is the later)."""
        return Notice(self.ready or other.ready,
                      other.status if other.status is not None else self.status,
                      self.watchdog or other.watchdog, self.stopping or other.stopping)


def parse_notice(data: bytes) -> Notice:
    """One sd_notify datagram: newline-separated assignments; unknown ones are ignored.

    ``WATCHDOG=trigger`` (a daemon asking to be restarted) is not a ping and is ignored.
    """
    ready = watchdog = stopping = False
    status: str | None = None
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "READY" and value == "1":
            ready = True
        elif key == "STATUS":
            status = value[:1024]
        elif key == "WATCHDOG" and value == "1":
            watchdog = True
        elif key == "STOPPING" and value == "1":
            stopping = True
    return Notice(ready, status, watchdog, stopping)


class NotifySocket:
    """One instance's ``NOTIFY_SOCKET``: bound at once, served by the shared notifier thread.

    Datagrams that come before :meth:`allow` names the workload (it may speak before the spawn
    returned) are kept, up to :data:`BATCH`, and judged then.

    Args:
        directory: The instance's directory (the socket is ``notify.sock`` in it).
        on_notice: Called in the notifier's thread with each batch's merged notice; it must be
            quick (count, tell an actor).

    Raises:
        OSError: the socket cannot be created or bound.
    """

    def __init__(self, directory: Path, on_notice: Callable[[Notice], None]) -> None:
        self._on_notice = on_notice
        self._pid: int | None = None
        self._pgid: int | None = None
        self._verdicts: dict[int, bool] = {}
        self._early: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            path = directory / "notify.sock"
            self.path: Path | None = None
            if len(os.fsencode(path)) <= _SUN_PATH:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                self.sock.bind(str(path))
                os.chmod(path, 0o600)
                self.path, self.address = path, str(path)
            else:
                name = f"mycelium-notify/{secrets.token_hex(12)}"
                self.sock.bind("\0" + name)
                self.address = "@" + name
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        shared_notifier().register(self)

    def allow(self, pid: int, pgid: int) -> None:
        """From now on, datagrams of ``pid``, its process group and its descendants count."""
        with self._lock:
            self._pid, self._pgid = pid, pgid
            early, self._early = self._early, []
        notice = Notice()
        for sender, data in early:
            if self._accepts(sender):
                notice = notice.merge(parse_notice(data))
        if early:
            self._deliver(notice)

    def close(self) -> None:
        """Stop serving and remove the socket (idempotent)."""
        shared_notifier().unregister(self)
        self.sock.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    # -- in the notifier's thread --------------------------------------------------------------

    def drain(self) -> None:
        """Read up to :data:`BATCH` datagrams and deliver what the workload's ones said."""
        notice: Notice | None = None
        for _ in range(BATCH):
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    _MAX_DATAGRAM, socket.CMSG_SPACE(_CREDS.size))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return  # closed meanwhile
            sender = _sender(ancdata)
            if sender is None:
                continue
            with self._lock:
                if self._pid is None:
                    if len(self._early) < BATCH:
                        self._early.append((sender, data))
                    continue
            if self._accepts(sender):
                parsed = parse_notice(data)
                notice = parsed if notice is None else notice.merge(parsed)
        if notice is not None:
            self._deliver(notice)

    def _accepts(self, pid: int) -> bool:
        if pid == self._pid:
            return True
        verdict = self._verdicts.get(pid)
        if verdict is None:
            verdict = self._related(pid)
            if len(self._verdicts) > 1024:
                self._verdicts.clear()
            self._verdicts[pid] = verdict
        return verdict

    def _related(self, pid: int) -> bool:
        """``pid`` is in the workload's process group or descends from the workload."""
        try:
            if os.getpgid(pid) == self._pgid:
                return True
            return any(p.pid == self._pid for p in psutil.Process(pid).parents())
        except (OSError, psutil.Error):
            return False  # gone already: it cannot be checked, so it does not count

    def _deliver(self, notice: Notice) -> None:
        try:
            self._on_notice(notice)
        except Exception:  # a broken handler must not stop the notifier
            log.exception("a notify handler failed")


def _sender(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and (
                len(data) >= _CREDS.size):
            pid: int = _CREDS.unpack_from(data)[0]
            return pid
    return None


class Notifier:
    """The thread that serves every :class:`NotifySocket` of the process (a :class:`SelectLoop`)."""

    def __init__(self) -> None:
        self._loop: SelectLoop[tuple[bool, NotifySocket | _Done]] = SelectLoop(
            "mycelium-notify", log, on_event=self._drain, on_handed=self._apply)

    def register(self, target: NotifySocket) -> None:
        """Serve ``target`` from now on."""
        self._loop.hand((True, target))

    def unregister(self, target: NotifySocket) -> None:
        """Stop serving ``target``; returns once it is out of the selector (it may be closed)."""
        done = threading.Event()
        self._loop.hand((False, target))
        self._loop.hand((False, _Done(done)))
        done.wait(2.0)

    @staticmethod
    def _drain(key: selectors.SelectorKey, _events: int) -> None:
        key.data.drain()

    def _apply(self, changes: list[tuple[bool, NotifySocket | _Done]]) -> None:
        selector = self._loop.selector
        for add, target in changes:
            if isinstance(target, _Done):
                target.event.set()
            elif add:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    selector.register(target.sock, selectors.EVENT_READ, target)
            else:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    selector.unregister(target.sock)


class _Done:
    """A marker among the changes: the changes before it are applied."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event


shared_notifier: Singleton[Notifier] = Singleton(Notifier)
"""The process-wide notifier (``shared_notifier()``), started on first use."""
