"""The edge's routing table: an immutable snapshot swapped whole, never edited in place.

The fabric pushes a new :class:`RouteTable` whenever endpoints change; the proxy reads the
current one once per request without a lock (one attribute read is atomic), so a swap under
load never shows a request half of an old table and half of a new one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from mycelium.edge.errors import EdgeConfigError
from mycelium.edge.hosts import HostMap

__all__ = ["APP_NAME", "Endpoint", "Route", "RouteTable", "route_request", "route_target",
           "split_target"]

APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
"""What an app name may look like; anything else in a path is answered 400."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Ready instance of an app, reachable over plain HTTP.

    Attributes:
        url: ``http://host:port`` of the workload.
        instance: The instance id, for logs and metrics only.
        digest: The instance's digest while its app runs a canary (answers are counted per
            digest), else empty.
        weight: Its smooth weighted round-robin weight during a canary (0: plain round-robin).
        host: Parsed from ``url``.
        port: Parsed from ``url``.
        address: ``host:port`` as bytes, lower-case (how the upstream names itself in an
            absolute redirect).
    """

    url: str
    instance: str = ""
    digest: str = ""
    weight: int = 0
    host: str = field(init=False, compare=False, repr=False)
    port: int = field(init=False, compare=False, repr=False)
    address: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Parse the URL once, so the proxy never parses it per request.

        Raises:
            EdgeConfigError: The URL is not ``http://host:port``.
        """
        try:
            parts = urlsplit(self.url)
            port = parts.port
        except ValueError as exc:
            raise EdgeConfigError(f"bad endpoint url {self.url!r}: {exc}") from None
        if parts.scheme != "http" or not parts.hostname or port is None:
            raise EdgeConfigError(f"bad endpoint url {self.url!r}: want http://host:port")
        object.__setattr__(self, "host", parts.hostname)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "address", f"{parts.hostname}:{port}".lower().encode())


@dataclass(frozen=True, slots=True)
class Route:
    """An app and its Ready endpoints; no endpoints means the edge answers 503.

    Attributes:
        app: The app name (``^[a-z0-9][a-z0-9-]{0,62}$``).
        endpoints: The Ready endpoints, in a stable order (round-robin walks it).
        weighted: Whether its endpoints carry weights (a canary): the balancer then uses
            smooth weighted round-robin.
        hosts: The host names the app owns (exact or ``*.suffix``, lower-case).
    """

    app: str
    endpoints: tuple[Endpoint, ...] = ()
    hosts: tuple[str, ...] = ()
    hold: bool = False
    """With no endpoint, hold a request while the app wakes (:mod:`mycelium.edge.hold`)."""
    weighted: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Refuse a bad app name or a list where a tuple is needed (immutability).

        Raises:
            EdgeConfigError: Bad app name.
        """
        if not APP_NAME.match(self.app):
            raise EdgeConfigError(f"bad app name {self.app!r}")
        if not isinstance(self.endpoints, tuple):
            object.__setattr__(self, "endpoints", tuple(self.endpoints))
        object.__setattr__(self, "weighted", any(ep.weight > 0 for ep in self.endpoints))
        if not isinstance(self.hosts, tuple):
            object.__setattr__(self, "hosts", tuple(self.hosts))


class RouteTable(Mapping[str, Route]):
    """A read-only mapping app → :class:`Route`.

    Args:
        routes: The routes by app name; copied, so later changes to it are not seen.

    Attributes:
        hosts: The routes' host names, for :meth:`by_host`.

    Raises:
        EdgeConfigError: A key differs from its route's app name, or two apps own one host.
    """

    __slots__ = ("_requests", "_routed", "_routes", "hosts")

    def __init__(self, routes: Mapping[str, Route] | None = None) -> None:
        copied = dict(routes or {})
        for name, route in copied.items():
            if name != route.app:
                raise EdgeConfigError(f"route key {name!r} differs from its app {route.app!r}")
        self._routes: Mapping[str, Route] = MappingProxyType(copied)
        self.hosts = HostMap({name: route.hosts for name, route in copied.items()
                              if route.hosts})
        self._routed: dict[tuple[bytes | None, str], tuple[str, str, bytes] | None] = {}
        """:func:`route_target`'s answers for this snapshot (a new snapshot starts empty)."""
        self._requests: dict[tuple[bytes | None, str], Routed | None] = {}
        """:func:`route_request`'s answers for this snapshot."""

    def by_host(self, host: bytes | None) -> Route | None:
        """The route of the app that owns ``host`` (a raw ``Host`` value), if any."""
        if host is None or not self.hosts:
            return None
        app = self.hosts.match(host)
        return None if app is None else self._routes.get(app)

    def __getitem__(self, app: str) -> Route:
        return self._routes[app]

    def get(self, app: str, default: Route | None = None) -> Route | None:  # type: ignore[override]  # hot path: skip Mapping's generic get
        """Return the route of ``app``, or ``default``."""
        return self._routes.get(app, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def __repr__(self) -> str:
        return f"RouteTable({dict(self._routes)!r})"


_ROUTED_SIZE = 1024
_ROUTED_MAX_TARGET = 2048
"""Bounds of the answers a snapshot remembers (entries, target length)."""


def route_target(table: RouteTable, host: bytes | None,
                 target: str) -> tuple[str, str, bytes] | None:
    """Route a request: by its ``Host`` first, else by its first path segment.

    Returns:
        ``(app, upstream target, prefix)``: ``prefix`` is ``/APP`` for a path route (what
        ``X-Forwarded-Prefix`` says), empty for a host route (the path goes on unchanged);
        ``None`` when the target is not in origin form. The app is not validated.
    """
    key = (host, target)
    routed = table._routed
    if key in routed:  # clients repeat their requests: each snapshot remembers its answers
        return routed[key]
    answer: tuple[str, str, bytes] | None
    route = table.by_host(host)
    if route is not None and target.startswith("/"):
        answer = route.app, target, b""
    else:
        parts = split_target(target)
        answer = None if parts is None else (parts[0], parts[1], b"/" + parts[0].encode())
    if len(target) <= _ROUTED_MAX_TARGET:
        if len(routed) >= _ROUTED_SIZE:
            routed.clear()
        routed[key] = answer
    return answer


Routed = tuple[str, str, bytes, "Route | None"]
"""``(app, upstream target, prefix, the app's route or None)``: see :func:`route_request`."""
_MISS = object()


def route_request(table: RouteTable, host: bytes | None, target: str) -> Routed | None:
    """:func:`route_target` and the app's route in one lookup (the fast path's).

    Returns:
        ``(app, upstream target, prefix, route)``, ``route`` ``None`` when no such app is
        routed; ``None`` when the target is not in origin form.
    """
    key = (host, target)
    requests = table._requests
    answer = requests.get(key, _MISS)
    if answer is not _MISS:
        return answer  # type: ignore[return-value]  # the sentinel is ruled out above
    parts = route_target(table, host, target)
    routed = None if parts is None else (*parts, table._routes.get(parts[0]))
    if len(target) <= _ROUTED_MAX_TARGET:
        if len(requests) >= _ROUTED_SIZE:
            requests.clear()
        requests[key] = routed
    return routed


def split_target(target: str) -> tuple[str, str] | None:
    """Split an edge request target into the app and the upstream target.

    ``/hello/a/b?x=1`` → ``("hello", "/a/b?x=1")``; ``/hello`` → ``("hello", "/")``;
    ``/hello?x=1`` → ``("hello", "/?x=1")``. The app part is returned unvalidated.

    Args:
        target: The request target as received (origin form, starting with ``/``).

    Returns:
        ``(app, upstream_target)``, or ``None`` when the target is not in origin form.
    """
    if not target.startswith("/"):
        return None
    path, sep, query = target.partition("?")
    slash = path.find("/", 1)
    if slash < 0:
        app, rest = path[1:], "/"
    else:
        app, rest = path[1:slash], path[slash:]
    return app, (rest + "?" + query) if sep else rest
