"""Readiness probes and port allocation for workloads (SPEC §5).

A probe is one plain ``GET`` over a raw socket: it needs no event loop, so an instance's helper
thread can call it directly, and it costs one short TCP connection. It is deliberately not
:mod:`http.client`: hundreds of instances starting at once probe thousands of times a second,
and a refused connect must cost microseconds, not a client object, a name lookup and a parser.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from functools import lru_cache
from urllib.parse import urlsplit

__all__ = ["free_port", "probe_health"]

#: How much of a probe's response is read before the connection is closed.
_MAX_PROBE_BODY = 64 * 1024


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


def probe_health(url: str, timeout: float) -> bool:
    """Ask a workload once whether it is healthy.

    Why one request and no retry: the caller (the instance's health loop) owns the schedule, the
    startup deadline and the failure count; a probe only reports what it saw.

    Args:
        url: ``http://host:port/path`` of the workload's health endpoint (query kept).
        timeout: Seconds for connecting and for each read.

    Returns:
        True when the workload answered ``200``; False on any other status, a refused or reset
        connection, a timeout or a malformed response. Never raises for network trouble.

    Raises:
        ValueError: ``url`` is not an ``http://`` URL with a host.
    """
    family, address, request = _target(url)
    try:
        if family == socket.AF_UNSPEC:
            sock = socket.create_connection(address, timeout=timeout)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
    except OSError:
        return False
    with sock:
        try:
            sock.sendall(request)
            head = _read_status_line(sock)
            if head is None:
                return False
            ok = _is_200(head)
            if ok:  # read to EOF so that our close sends no RST (briefly: the answer counts)
                sock.settimeout(min(timeout, 0.1))
                _drain(sock, _MAX_PROBE_BODY)
            return ok
        except OSError:
            return False


def _read_status_line(sock: socket.socket) -> bytes | None:
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > 8192:
            return None
        data += chunk
    return data


def _is_200(data: bytes) -> bool:
    parts = data.split(b"\n", 1)[0].split(None, 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"


def _drain(sock: socket.socket, limit: int) -> None:
    with contextlib.suppress(OSError):  # a server that keeps the connection open, or resets it
        while limit > 0:
            chunk = sock.recv(min(limit, 65536))
            if not chunk:
                return
            limit -= len(chunk)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the kernel picks it by binding port 0).

    Why this is good enough: the port is handed to the workload as ``PORT`` right away; if another
    process grabs it in between, the workload fails to bind, exits, and its supervisor starts a
    replacement with a fresh port.

    Raises:
        OSError: ``host`` cannot be bound (not a local address).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
