"""What a secret's app, name and value may be, checked at the boundary (pure, no I/O).

Standard library only: the CLI's fast path checks a ``secret set`` with these before it
reads the value, without loading the sealing and storing parts.
"""

from __future__ import annotations

import re

from .errors import BadSecret

__all__ = ["APP_RE", "MAX_VALUE", "NAME_RE", "check_app", "check_name", "check_value"]

APP_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
"""An app's name, as a manifest's ``name`` (:data:`mycelium.spores.manifest.NAME_RE`, which a
test keeps equal: importing the spores package here would cost every CLI start ~40 ms)."""

NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
"""A secret's name: also a valid environment variable and file name."""

MAX_VALUE = 64 * 1024
"""The largest value, in bytes (64 KiB)."""


def check_app(app: object) -> str:
    """``app`` if it is a valid app name.

    Raises:
        BadSecret: anything else.
    """
    if not isinstance(app, str) or not APP_RE.fullmatch(app):
        raise BadSecret(f"bad app name {app!r}: expected ^[a-z0-9][a-z0-9-]{{0,62}}$")
    return app


def check_name(name: object) -> str:
    """``name`` if it is a valid secret name.

    Raises:
        BadSecret: anything else (the message shows the name: names are not secret).
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise BadSecret(f"bad secret name {name!r}: expected ^[A-Z_][A-Z0-9_]{{0,63}}$ "
                        "(upper-case letters, digits, '_')")
    return name


def check_value(value: object) -> bytes:
    """``value`` if it is a storable secret value: 1 byte to 64 KiB.

    Raises:
        BadSecret: empty, too large or not bytes (the message gives the size, never the value).
    """
    if not isinstance(value, bytes | bytearray):
        raise BadSecret("a secret's value is bytes")
    if not value:
        raise BadSecret("empty secret value: give the value on stdin, e.g. "
                        "`printf %s \"$VALUE\" | mycelium secret set APP NAME`")
    if len(value) > MAX_VALUE:
        raise BadSecret(f"secret value too large: {len(value)} bytes > {MAX_VALUE} (64 KiB)")
    return bytes(value)
