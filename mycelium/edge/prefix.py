"""Apps served under a path prefix: what the upstream is told, and its redirects fixed.

An app reached as ``/APP/…`` sees its requests at ``/…``, so a redirect it writes as an
absolute path (``Location: /target``) or as its own address
(``Location: http://127.0.0.1:PORT/target``) would leave the prefix and send the browser to
another app. The edge tells the upstream its prefix (``X-Forwarded-Prefix: /APP``, what
Werkzeug's ``ProxyFix(x_prefix=1)`` and most frameworks read) and, as nginx's
``proxy_redirect default`` does, puts such ``Location`` / ``Content-Location`` values back
under the prefix. Relative references and paths already under the prefix are left alone.
"""

from __future__ import annotations

__all__ = ["REWRITTEN", "rewrite_lines", "rewrite_location"]

REWRITTEN = frozenset({b"location", b"content-location"})
"""The answer fields whose value is rewritten under the prefix."""


def _under(path: bytes, prefix: bytes) -> bool:
    """``path`` is the prefix itself or inside it (``/APP``, ``/APP/…``, ``/APP?…``)."""
    if not path.startswith(prefix):
        return False
    rest = path[len(prefix):]
    return not rest or rest[:1] in (b"/", b"?", b"#")


def rewrite_location(value: bytes, prefix: bytes, upstream: bytes) -> bytes:
    """Return ``value`` (a Location) under ``prefix`` when it escapes it, else unchanged.

    Args:
        value: The header value as the upstream sent it (surrounding spaces stripped).
        prefix: ``/APP``; empty when the app is reached by host (nothing to rewrite).
        upstream: The upstream's own address, ``host:port`` (lower-case).

    Returns:
        ``/APP/target`` for ``/target`` or ``http://<upstream>/target``; anything else as is.
    """
    if not prefix:
        return value
    if value.startswith(b"/") and not value.startswith(b"//"):
        return value if _under(value, prefix) else prefix + value
    lower = value[:7 + len(upstream) + 1].lower()
    own = b"http://" + upstream
    if lower.startswith(own) and (len(value) == len(own) or lower[len(own):len(own) + 1] in
                                  (b"/", b"?", b"#")):
        path = value[len(own):]
        if not path.startswith(b"/"):
            path = b"/" + path
        return path if _under(path, prefix) else prefix + path
    return value


def rewrite_lines(lines: list[bytes], prefix: bytes, upstream: bytes) -> list[bytes]:
    """Rewrite the ``Location`` / ``Content-Location`` lines of a header block in place.

    Args:
        lines: Raw header lines (``Name: value``), in order.
        prefix: ``/APP``.
        upstream: The upstream's ``host:port``.
    """
    for i, line in enumerate(lines):
        colon = line.find(b":")
        if line[:colon].lower() in REWRITTEN:
            value = line[colon + 1:].strip()
            new = rewrite_location(value, prefix, upstream)
            if new is not value:
                lines[i] = line[:colon] + b": " + new
    return lines
