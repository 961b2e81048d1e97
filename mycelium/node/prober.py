"""One thread that runs every health probe of the node at once, on non-blocking sockets.

A probe is one plain ``GET`` over a raw socket, True only on a ``200`` (deliberately not
:mod:`http.client`: hundreds of instances starting at once probe thousands of times a second,
and a refused connect must cost microseconds, not a client object, a name lookup and a
parser). Nothing blocks: sockets connect, send and read under epoll, each with its own
deadline, and the answer goes to a callback (:func:`mycelium.node.health.probe_health` waits
for it). So a workload that hangs its probe delays nobody else's, and hundreds of probes a
second cost one thread and no hand-over between threads (a pool of blocking probers made
thousands of context switches a second).

Besides the health probe (True only on a 200), :meth:`Prober.check` runs the manifest's
``http`` checks (2xx/3xx pass) and ``tcp`` checks (a connect passes), with a detail that says
what was seen (``HTTP 503``, ``connect refused``, ``timeout after 1s``).

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
CheckCallback = Callable[[bool, str], None]
"""``callback(ok, detail)`` of :meth:`Prober.check`."""
_HEALTH, _HTTP, _TCP = 0, 1, 2  # what a probe passes on: a 200, a 2xx/3xx, a connect

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


def _status(data: bytes) -> tuple[bool, str]:
    """(passes as an http check, detail) from a status line: 2xx and 3xx pass."""
    parts = data.split(b"\n", 1)[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return False, "malformed response"
    code = int(parts[1])
    return 200 <= code < 400, f"HTTP {code}"


class _Probe:
    """One probe in flight: its socket, what it has read, and what it waits for."""

    __slots__ = ("buffer", "callback", "deadline", "detail", "mode", "ok", "request", "sent",
                 "sock", "timeout")

    def __init__(self, sock: socket.socket, request: bytes, deadline: float,
                 callback: CheckCallback, mode: int = _HEALTH, timeout: float = 0.0) -> None:
        self.sock = sock
        self.request = request
        self.sent = 0
        self.buffer = b""
        self.ok: bool | None = None  # known once the status line is in (then: draining)
        self.deadline = deadline
        self.callback: CheckCallback | None = callback
        self.mode = mode
        self.timeout = timeout
        self.detail = ""


class Prober:
    """The node's prober thread; :meth:`probe` may be called from any thread."""

    def __init__(self) -> None:
        self._deadlines: list[tuple[float, int, _Probe]] = []
        self._ids = itertools.count()
        self._loop: SelectLoop[tuple[str, float, CheckCallback, int]] = SelectLoop(
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
        self._loop.hand((url, timeout, lambda ok, _detail: callback(ok), _HEALTH))

    def check(self, kind: str, url: str, timeout: float, callback: CheckCallback) -> None:
        """Run one ``http`` or ``tcp`` check; ``callback(ok, detail)`` runs in the prober's
        thread within ``timeout`` (plus a brief drain after a pass).

        ``http`` GETs ``url`` and passes on 2xx/3xx (detail ``HTTP <code>``); ``tcp`` connects
        to ``url``'s host and port and passes once connected. A failure's detail says why:
        ``connect refused``, ``timeout after <s>s``, ``malformed response``, an OS error.

        Raises:
            ValueError: an unknown ``kind``, or ``url`` is not an ``http://host:port/path`` URL.
        """
        modes = {"http": _HTTP, "tcp": _TCP}
        if kind not in modes:
            raise ValueError(f"a prober check is http or tcp, got {kind!r}")
        _target(url)
        self._loop.hand((url, timeout, callback, modes[kind]))

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
                if probe.ok is None:
                    probe.detail = f"timeout after {probe.timeout:g}s"
                self._finish(probe, bool(probe.ok))  # a 200 still draining counts

    def _fail_all(self) -> None:
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, _Probe):
                self._finish(key.data, False)

    def _start_handed(self, handed: list[tuple[str, float, CheckCallback, int]]) -> None:
        for url, timeout, callback, mode in handed:
            self._start(url, timeout, callback, mode)

    def _start(self, url: str, timeout: float, callback: CheckCallback, mode: int) -> None:
        family, target, request = _target(url)
        address: tuple[object, ...] = target
        try:
            if family == socket.AF_UNSPEC:  # a name: resolved here, like the blocking probe
                family, _, _, _, address = socket.getaddrinfo(*target, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            call_logged(log, "a health probe's callback", callback, False,
                        exc.strerror or str(exc))
            return
        sock.setblocking(False)
        probe = _Probe(sock, request, time.monotonic() + timeout, callback, mode, timeout)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):  # refused at once: the usual "not up yet"
            probe.detail = ("connect refused" if code == errno.ECONNREFUSED
                            else os.strerror(code))
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
        except OSError as exc:  # refused, reset, unreachable
            if not probe.ok:
                probe.detail = ("connect refused" if exc.errno == errno.ECONNREFUSED
                                else exc.strerror or str(exc))
            self._finish(probe, bool(probe.ok))

    def _send(self, probe: _Probe) -> None:
        if probe.sent == 0:
            code = probe.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            if probe.mode == _TCP:
                probe.detail = "connected"
                self._finish(probe, True)
                return
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
                if probe.mode == _HEALTH:
                    probe.ok = _is_200(probe.buffer)
                else:
                    probe.ok, probe.detail = _status(probe.buffer)
                if not probe.ok:
                    self._finish(probe, False)
                    return
                # a 200: read on to EOF (so that our close sends no RST), but only briefly
                probe.deadline = min(probe.deadline, time.monotonic() + _DRAIN_GRACE)
                heapq.heappush(self._deadlines, (probe.deadline, next(self._ids), probe))
                probe.buffer = probe.buffer[probe.buffer.index(b"\n"):]
            elif not chunk or len(probe.buffer) > _MAX_HEAD:
                probe.detail = "connection closed" if not chunk else "malformed response"
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
        call_logged(log, "a health probe's callback", callback, ok, probe.detail)


shared_prober: Singleton[Prober] = Singleton(Prober)
"""The process-wide prober (``shared_prober()``), started on first use."""
