"""What a secret's name and value may be, checked at the boundary (pure, no I/O)."""

from __future__ import annotations

import re

from .errors import BadSecret

__all__ = ["MAX_VALUE", "NAME_RE", "check_name", "check_value"]

NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
"""A secret's name: also a valid environment variable and file name."""

MAX_VALUE = 64 * 1024
"""The largest value, in bytes (64 KiB)."""


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
