"""Host routing: which app a request's ``Host`` names, before path routing is tried.

An app may own host names: exact ones (``api.example.com``) and wildcards (``*.example.com``,
matching one or more labels before the suffix, never the bare suffix). A request whose
``Host`` (port ignored, case-insensitive, a trailing dot ignored) matches goes to that app
with its path unchanged; any other host falls back to ``/APP/…`` path routing. An exact
name wins over a wildcard, a longer wildcard suffix over a shorter one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from mycelium.edge.errors import EdgeConfigError

__all__ = ["HOST_NAME", "HostMap", "normalize_host", "valid_host_name"]

HOST_NAME = re.compile(
    r"^(\*\.)?(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
"""A host name an app may own: DNS labels (or an IPv4 address), optionally ``*.`` first."""


def valid_host_name(name: str) -> bool:
    """Whether ``name`` (already lower-cased) may be deployed with ``--host``."""
    return bool(HOST_NAME.match(name))


def normalize_host(value: bytes) -> str:
    """A ``Host`` header value as a name to match: lower-case, no port, no trailing dot."""
    host = value.decode("latin-1").strip().lower()
    if host.startswith("["):  # an IPv6 literal: [::1]:8080
        return host.partition("]")[0] + "]"
    host = host.rpartition(":")[0] if ":" in host else host
    return host[:-1] if host.endswith(".") else host


class HostMap:
    """Host names → app, built once per routing snapshot.

    Args:
        owners: ``app → its host names``.

    Raises:
        EdgeConfigError: A name is owned by two apps, or is not a valid host name.
    """

    __slots__ = ("exact", "suffixes")

    def __init__(self, owners: Mapping[str, Iterable[str]] | None = None) -> None:
        self.exact: dict[str, str] = {}
        self.suffixes: dict[str, str] = {}  # ".example.com" → app
        for app, names in (owners or {}).items():
            for name in names:
                if not valid_host_name(name):
                    raise EdgeConfigError(f"bad host name {name!r} of app {app!r}")
                table, key = ((self.suffixes, name[1:]) if name.startswith("*.")
                              else (self.exact, name))
                other = table.get(key)
                if other is not None and other != app:
                    raise EdgeConfigError(f"host {name!r} belongs to {other!r} and {app!r}")
                table[key] = app

    def __bool__(self) -> bool:
        return bool(self.exact or self.suffixes)

    def match(self, host: bytes) -> str | None:
        """The app that owns ``host`` (a raw ``Host`` value), or ``None``."""
        name = normalize_host(host)
        app = self.exact.get(name)
        if app is not None or not self.suffixes:
            return app
        dot = name.find(".")
        while dot > 0:  # ``a.b.example.com`` tries ``.b.example.com``, then ``.example.com``
            app = self.suffixes.get(name[dot:])
            if app is not None:
                return app
            dot = name.find(".", dot + 1)
        return None
