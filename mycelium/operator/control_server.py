"""The control socket's server: one JSON line in, one JSON line out, with bounded resources.

One thread waits on every connection with a selector until its request line is complete;
only then does a worker thread take it (a handler may block on an actor's answer for
seconds). So an idle connection costs a file descriptor, not a thread, and both are bounded:

- at most ``max_connections`` connections are open at once. A new one beyond that takes the
  place of the oldest connection still waiting for its request (that one gets a refusal line
  and is closed), so a client that opens connections and sends nothing cannot lock the CLI
  out; when every open connection is being served, the new one is refused with that line;
- a connection that has not sent its whole request line ``idle_timeout`` seconds after it was
  accepted is closed (with a line saying so);
- at most ``max_connections`` worker threads exist (started on demand, gone after a minute
  idle), so the threads are bounded by the same number.

A client that sends its request at once (the CLI does) never notices any of it: the selector
hands its line on as soon as it arrives.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mycelium._logger import get_logger
from mycelium.operator.client import encode_line

__all__ = ["IDLE_TIMEOUT", "MAX_CONNECTIONS", "MAX_REQUEST", "ControlServer", "admission",
           "check_limits"]

log = get_logger(__name__)

MAX_CONNECTIONS = 64
"""Default cap on the control socket's open connections (and on its worker threads)."""

IDLE_TIMEOUT = 10.0
"""Default seconds a control connection may take to send its request line."""

MAX_REQUEST = 1024 * 1024
"""The longest request line (bytes): the waiting connections' buffers stay within
``max_connections`` times this. Requests are small; replies may be longer (the client reads up to
:data:`mycelium.operator.client.MAX_LINE`)."""

SEND_TIMEOUT = 10.0
"""Seconds a worker waits for a client that does not read its reply."""

WORKER_IDLE = 60.0
"""Seconds an idle worker thread waits for work before it ends."""

Handler = Callable[[bytes], bytes]
"""Turns one request line (without its newline) into one reply line (without its newline)."""


def check_limits(max_connections: int, idle_timeout: float) -> None:
    """Refuse limits the server cannot work with.

    Raises:
        ValueError: ``max_connections`` below 1 or ``idle_timeout`` not above 0.
    """
    if max_connections < 1 or not idle_timeout > 0:
        raise ValueError(f"the control socket needs max_connections >= 1 and idle_timeout > 0 "
                         f"(got {max_connections} and {idle_timeout})")


Admission = Literal["admit", "evict-oldest", "refuse"]


def admission(waiting: int, busy: int, limit: int) -> Admission:
    """What a new connection gets, given the open ones (pure: the selector applies it).

    Args:
        waiting: Open connections whose request line is not complete yet.
        busy: Open connections a worker is serving.
        limit: The most open connections.

    Returns:
        ``admit`` below the limit; at it, ``evict-oldest`` (the oldest waiting connection
        gives its place) while any connection waits, else ``refuse``.
    """
    if waiting + busy < limit:
        return "admit"
    return "evict-oldest" if waiting else "refuse"


def _refusal(error: str) -> bytes:
    return encode_line({"ok": False, "error": error, "exit_code": 1}) + b"\n"


@dataclass(slots=True)
class _Waiting:
    """A connection whose request line is not complete yet."""

    buf: bytearray
    deadline: float


class _Workers:
    """Daemon worker threads, started on demand up to ``limit``; idle ones end after a while.

    Daemon threads on purpose: a request stuck in an actor's ``ask`` must not hold up the
    process's exit when the mesh stops. A new thread starts only when more jobs are queued
    than workers wait for one, so the threads never outnumber the jobs at their busiest.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._queued = 0  # jobs put and not yet taken
        self._waiting = 0  # workers blocked on the queue

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on a worker (the caller never has more than ``limit`` jobs running)."""
        with self._lock:
            self._queued += 1
            if self._queued > self._waiting and self._threads < self._limit:
                self._threads += 1
                threading.Thread(target=self._work, name="control-worker", daemon=True).start()
        self._jobs.put(job)

    def stop(self) -> None:
        """Let every worker end once it finished its current job."""
        with self._lock:
            count = self._threads
            self._queued += count
        for _ in range(count):
            self._jobs.put(None)

    def threads(self) -> int:
        """How many worker threads exist now."""
        with self._lock:
            return self._threads

    def _work(self) -> None:
        while True:
            with self._lock:
                self._waiting += 1
            try:
                job = self._jobs.get(timeout=WORKER_IDLE)
            except queue.Empty:
                with self._lock:
                    self._waiting -= 1
                    if self._queued <= self._waiting:  # every queued job has another taker
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._waiting -= 1
                self._queued -= 1
                if job is None:
                    self._threads -= 1
                    return
            try:
                job()
            except Exception:  # a worker outlives any one request
                log.exception("control request failed")


class ControlServer:
    """Serves a listening unix socket until :meth:`close`.

    Args:
        sock: The bound, listening socket (the server closes it).
        handle: The request handler; runs in a worker thread.
        max_connections: Open connections at most (also the worker threads at most).
        idle_timeout: Seconds a connection may take to send its request line.

    Raises:
        ValueError: a limit that is not positive.
    """

    def __init__(self, sock: socket.socket, handle: Handler, *,
                 max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        check_limits(max_connections, idle_timeout)
        self._sock = sock
        self._handle = handle
        self._max = max_connections
        self._idle_timeout = idle_timeout
        self._waiting: dict[socket.socket, _Waiting] = {}  # oldest first
        self._busy = 0  # connections a worker is serving
        self._lock = threading.Lock()
        self._workers = _Workers(max_connections)
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="control-select", daemon=True)

    def start(self) -> None:
        """Start serving (one selector thread)."""
        self._thread.start()

    def close(self) -> None:
        """Stop accepting, close every waiting connection; requests being served finish."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        self._workers.stop()

    def threads(self) -> int:
        """The server's threads now: the selector and the workers."""
        return 1 + self._workers.threads()

    def connections(self) -> int:
        """Open connections now (waiting for a request or being served)."""
        with self._lock:
            return len(self._waiting) + self._busy

    # -- the selector thread ------------------------------------------------------------------

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        self._sock.setblocking(False)
        sel.register(self._sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._closed:
                try:
                    for key, _ in sel.select(self._next_timeout()):
                        if key.fileobj is self._sock:
                            self._accept(sel)
                        elif key.fileobj is not self._wake_r:
                            self._read(sel, key.fileobj)  # type: ignore[arg-type]  # a conn
                    self._expire(sel)
                except Exception:  # the socket must outlive any one connection's trouble
                    log.exception("control socket: serving failed")
        finally:
            for conn in list(self._waiting):
                self._drop(sel, conn, None)
            sel.close()
            self._sock.close()
            self._wake_r.close()
            self._wake_w.close()

    def _next_timeout(self) -> float | None:
        for waiting in self._waiting.values():  # the oldest's deadline comes first
            return max(0.0, waiting.deadline - time.monotonic())
        return None

    def _accept(self, sel: selectors.BaseSelector) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, or closed: try again on the next event
                log.warning("control socket: accept failed", exc_info=True)
                return
            with self._lock:
                decision = admission(len(self._waiting), self._busy, self._max)
            if decision == "evict-oldest":
                oldest = next(iter(self._waiting))
                self._drop(sel, oldest, "too many control connections: this one sent no "
                                        "request and gave its place to a newer one")
            elif decision == "refuse":
                _send_and_close(conn, _refusal(
                    f"the control socket serves {self._max} connections at most; try again"))
                continue
            conn.setblocking(False)
            with self._lock:
                self._waiting[conn] = _Waiting(bytearray(),
                                               time.monotonic() + self._idle_timeout)
            sel.register(conn, selectors.EVENT_READ)

    def _read(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        waiting = self._waiting.get(conn)
        if waiting is None:  # dropped earlier in the same round of events
            return
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client gave up before its request was complete
            self._drop(sel, conn, None)
            return
        start = len(waiting.buf)
        waiting.buf += data
        end = waiting.buf.find(b"\n", start)
        if end < 0:
            if len(waiting.buf) > MAX_REQUEST:
                self._drop(sel, conn, f"a control request is one line of {MAX_REQUEST} "
                                      f"bytes at most")
            return
        sel.unregister(conn)
        line = bytes(waiting.buf[:end])
        with self._lock:
            del self._waiting[conn]
            self._busy += 1
        self._workers.submit(lambda: self._serve(conn, line))

    def _expire(self, sel: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for conn, waiting in list(self._waiting.items()):
            if waiting.deadline > now:
                return  # the rest are younger
            self._drop(sel, conn, f"no request within {self._idle_timeout:g}s: closed")

    def _drop(self, sel: selectors.BaseSelector, conn: socket.socket, why: str | None) -> None:
        """Close a waiting connection (telling it ``why`` if there is room in its buffer)."""
        with self._lock:
            self._waiting.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn)
        _send_and_close(conn, None if why is None else _refusal(why))

    # -- a worker thread ------------------------------------------------------------------------

    def _serve(self, conn: socket.socket, line: bytes) -> None:
        try:
            reply = self._handle(line)
            conn.setblocking(True)
            conn.settimeout(SEND_TIMEOUT)
            with contextlib.suppress(OSError):
                conn.sendall(reply + b"\n")
        finally:
            conn.close()
            with self._lock:
                self._busy -= 1


def _send_and_close(conn: socket.socket, line: bytes | None) -> None:
    """Best effort, never blocking: a refusal must not wait for a client that does not read."""
    if line is not None:
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(line)
    conn.close()
