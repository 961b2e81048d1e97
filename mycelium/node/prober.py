"""One thread that runs every health probe of the node at once, on non-blocking sockets.

A probe is one plain ``GET`` over a raw socket, True only on a ``200`` (deliberately not
:mod:`http.client`: hundreds of instances starting at once probe thousands of times a second,
and a refused connect must cost microseconds, not a client object, a name lookup and a
parser). Nothing blocks: sockets connect, send and read under epoll, each with its own
deadline, and the answer goes to a callback (:func:`mycelium.node.health.probe_health` waits
for it). So a workload that hangs its probe delays nobody else's, and hundreds of probes a
second cost one thread and no hand-over between threads (a pool of blocking probers made
thousands of context switches a second).

Callbacks run in the prober's thread and must be quick (tell an actor, schedule a timer); one
that raises is logged and the prober goes on.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import ipaddress
import itertools
import os
import selectors
import socket
import time
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlsplit

from mycelium._logger import get_logger
from supervisors.callbacks import call_logged
from supervisors.singleton import Singleton

from .selectloop import SelectLoop

__all__ = ["Prober", "shared_prober"]

log = get_logger(__name__)

ProbeCallback = Callable[[bool], None]

_MAX_HEAD = 8192
_MAX_BODY = 64 * 1024
_DRAIN_GRACE = 0.1  # after a 200, how long the rest may take before we close anyway


@lru_cache(maxsize=4096)
def _target(url: str) -> tuple[socket.AddressFamily, tuple[str, int], bytes]:
    """(family, address, request bytes) for a health URL; parsed once per URL."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"health probe needs an http://host:port/path URL, got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    host, port = parts.hostname, parts.port or 80
    try:
        family = (socket.AF_INET6 if ipaddress.ip_address(host).version == 6
                  else socket.AF_INET)
    except ValueError:  # a name: resolved on every probe (the address may move)
        family = socket.AF_UNSPEC
    authority = f"[{host}]" if ":" in host else host
    request = (f"GET {path} HTTP/1.1\r\nHost: {authority}:{port}\r\n"
               "User-Agent: mycelium-probe\r\nConnection: close\r\n\r\n").encode("latin-1")
    return family, (host, port), request


def _is_200(data: bytes) -> bool:
    parts = data.split(b"\n", 1)[0].split(None, 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"


class _Probe:
    """One probe in flight: its socket, what it has read, and what it waits for."""

    __slots__ = ("buffer", "callback", "deadline", "ok", "request", "sent", "sock")

    def __init__(self, sock: socket.socket, request: bytes, deadline: float,
                 callback: ProbeCallback) -> None:
        self.sock = sock
        self.request = request
        self.sent = 0
        self.buffer = b""
        self.ok: bool | None = None  # known once the status line is in (then: draining)
        self.deadline = deadline
        self.callback: ProbeCallback | None = callback


class Prober:
    """The node's prober thread; :meth:`probe` may be called from any thread."""

    def __init__(self) -> None:
        self._deadlines: list[tuple[float, int, _Probe]] = []
        self._ids = itertools.count()
        self._loop: SelectLoop[tuple[str, float, ProbeCallback]] = SelectLoop(
            "mycelium-prober", log, on_event=self._advance, on_handed=self._start_handed,
            timeout=self._timeout, after_select=self._expire, on_close=self._fail_all)
        self._selector = self._loop.selector

    def probe(self, url: str, timeout: float, callback: ProbeCallback) -> None:
        """Probe ``url`` once; ``callback(ok)`` runs in the prober's thread within ``timeout``
        (plus a brief drain after a 200).

        Raises:
            ValueError: ``url`` is not an ``http://host:port/path`` URL (checked here, at once).
        """
        _target(url)
        self._loop.hand((url, timeout, callback))

    def close(self) -> None:
        """Stop the thread; probes in flight are answered False (the shared one never closes)."""
        self._loop.close()

    @property
    def running(self) -> bool:
        """True while the prober's thread runs."""
        return self._loop.running

    # -- the prober's thread -------------------------------------------------------------------

    def _timeout(self) -> float | None:
        if not self._deadlines:
            return None
        return max(0.0, self._deadlines[0][0] - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, probe = heapq.heappop(self._deadlines)
            if probe.callback is not None:  # not finished yet: out of time
                self._finish(probe, bool(probe.ok))  # a 200 still draining counts

    def _fail_all(self) -> None:
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, _Probe):
                self._finish(key.data, False)

    def _start_handed(self, handed: list[tuple[str, float, ProbeCallback]]) -> None:
        for url, timeout, callback in handed:
            self._start(url, timeout, callback)

    def _start(self, url: str, timeout: float, callback: ProbeCallback) -> None:
        family, target, request = _target(url)
        address: tuple[object, ...] = target
        try:
            if family == socket.AF_UNSPEC:  # a name: resolved here, like the blocking probe
                family, _, _, _, address = socket.getaddrinfo(*target, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            call_logged(log, "a health probe's callback", callback, False)
            return
        sock.setblocking(False)
        probe = _Probe(sock, request, time.monotonic() + timeout, callback)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):  # refused at once: the usual "not up yet"
            self._finish(probe, False)
            return
        self._selector.register(sock, selectors.EVENT_WRITE, probe)
        heapq.heappush(self._deadlines, (probe.deadline, next(self._ids), probe))

    def _advance(self, key: selectors.SelectorKey, events: int) -> None:
        probe: _Probe = key.data
        try:
            if events & selectors.EVENT_WRITE:
                self._send(probe)
            elif events & selectors.EVENT_READ:
                self._read(probe)
        except OSError:  # refused, reset, unreachable
            self._finish(probe, bool(probe.ok))

    def _send(self, probe: _Probe) -> None:
        if probe.sent == 0:
            code = probe.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
        try:
            probe.sent += probe.sock.send(probe.request[probe.sent:])
        except BlockingIOError:  # no room yet: the next writable event goes on
            return
        if probe.sent == len(probe.request):
            self._selector.modify(probe.sock, selectors.EVENT_READ, probe)

    def _read(self, probe: _Probe) -> None:
        try:
            chunk = probe.sock.recv(65536)
        except BlockingIOError:  # a spurious wake-up
            return
        if probe.ok is None:  # still reading the status line
            probe.buffer += chunk
            if b"\n" in probe.buffer:
                probe.ok = _is_200(probe.buffer)
                if not probe.ok:
                    self._finish(probe, False)
                    return
                # a 200: read on to EOF (so that our close sends no RST), but only briefly
                probe.deadline = min(probe.deadline, time.monotonic() + _DRAIN_GRACE)
                heapq.heappush(self._deadlines, (probe.deadline, next(self._ids), probe))
                probe.buffer = probe.buffer[probe.buffer.index(b"\n"):]
            elif not chunk or len(probe.buffer) > _MAX_HEAD:
                self._finish(probe, False)
                return
        else:
            probe.buffer += chunk
        if not chunk or len(probe.buffer) > _MAX_BODY:
            self._finish(probe, bool(probe.ok))

    def _finish(self, probe: _Probe, ok: bool) -> None:
        callback, probe.callback = probe.callback, None
        if callback is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(probe.sock)
        probe.sock.close()
        call_logged(log, "a health probe's callback", callback, ok)


shared_prober: Singleton[Prober] = Singleton(Prober)
"""The process-wide prober (``shared_prober()``), started on first use."""
