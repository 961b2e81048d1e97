"""Which files were written since the last look: Linux ``inotify``, through ctypes.

The output watcher (:mod:`.output`) indexes every live stream of every instance. Looking at each
(a ``stat``) four times a second cost a mesh with 300 instances ~2,400 syscalls a second and
about a fifth of its steady CPU, although almost every stream is quiet almost all the time. The
kernel knows which files were written: one ``inotify`` descriptor with an ``IN_MODIFY`` watch per
live stream, drained without blocking once per pass, names the streams worth a look. A write
queues its event before the ``write`` call returns, so a stream without an event at a drain
has not grown since its last look (the index's "written after" time advances to the drain
without a syscall).

Without inotify (another OS, a kernel built without it, the watch limit reached) the caller
falls back to looking at every stream.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from pathlib import Path
from typing import Any

__all__ = ["Inotify", "open_inotify"]

_IN_MODIFY = 0x00000002
_IN_Q_OVERFLOW = 0x00004000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)

_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc = lib
    return _libc


class Inotify:
    """One non-blocking inotify descriptor watching files for writes.

    Raises:
        OSError: inotify is not available.
    """

    def __init__(self) -> None:
        lib = _lib()
        fd = lib.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self._fd = fd
        self._lib = lib

    def watch(self, path: Path) -> int:
        """Watch ``path`` for writes; returns its watch descriptor.

        Raises:
            OSError: the file is gone, or the user's watch limit is reached.
        """
        wd = self._lib.inotify_add_watch(self._fd, os.fsencode(path), _IN_MODIFY)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
        return int(wd)

    def unwatch(self, wd: int) -> None:
        """Stop watching (harmless if the file is gone: the kernel dropped the watch then)."""
        self._lib.inotify_rm_watch(self._fd, wd)

    def changed(self) -> set[int] | None:
        """The watch descriptors written since the last call; None if the kernel's queue
        overflowed (then any watched file may have been written)."""
        seen: set[int] = set()
        overflow = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                pos += _EVENT.size + length
                if mask & _IN_Q_OVERFLOW:
                    overflow = True
                elif mask & _IN_MODIFY:
                    seen.add(wd)
        return None if overflow else seen

    def close(self) -> None:
        """Close the descriptor (every watch goes with it)."""
        with contextlib.suppress(OSError):
            os.close(self._fd)


def open_inotify() -> Inotify | None:
    """An :class:`Inotify`, or None where the OS offers none."""
    try:
        return Inotify()
    except (OSError, AttributeError):  # AttributeError: a libc without inotify_init1
        return None
