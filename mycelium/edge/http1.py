"""A small, strict HTTP/1.1 parser for a proxy: pure functions over bytes, no I/O.

Strict where laxness lets one message be read two ways (request smuggling): no whitespace
before a header's colon, no obsolete line folding, one Content-Length (identical repeats are
merged into one, differing ones refused), ``chunked`` as the only transfer coding, never both,
and a ``Host`` on every HTTP/1.1 request (RFC 9112 §3.2). Chunked bodies are re-framed by
:mod:`mycelium.edge.chunked`. Header lines a proxy passes on are kept as the raw
bytes received, so forwarding costs a join, not a re-serialisation.
"""

from __future__ import annotations

import re
from typing import TypeVar

from mycelium.edge.prefix import rewrite_lines

__all__ = [
    "HOP_BY_HOP",
    "ProtocolError",
    "RequestHead",
    "ResponseHead",
    "parse_request_head",
    "parse_response_head",
]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding",
    b"upgrade", b"trailer",
})
"""RFC 9110 §7.6.1 hop-by-hop fields, plus ``Trailer`` (describes the hop's chunked framing)."""

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_FIELD = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*"
_FIELDS = re.compile(_FIELD + rb"(?:\r\n" + _FIELD + rb")*")
"""A whole header block: no space before a colon, no folding, no control characters."""
_INTERESTING = HOP_BY_HOP | {b"content-length", b"host", b"expect", b"x-forwarded-for",
                             b"x-forwarded-host", b"x-forwarded-proto", b"x-mycelium-edge",
                             b"x-forwarded-prefix", b"location", b"content-location",
                             b"http2-settings"}
"""The fields the proxy acts on (the block already passed :data:`_FIELDS`)."""


class ProtocolError(Exception):
    """The peer broke HTTP/1.1; ``status`` is what to answer a client (400, 413, 431, 501)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Head:
    """What requests and responses share: the raw header block and the body's framing.

    Attributes:
        block: The header lines as received, joined by CRLF (no final blank line).
        special: Some field must be dropped or rewritten before forwarding (hop-by-hop,
            Connection, X-Forwarded-*, Expect, X-Mycelium-Edge); when false the block is
            forwarded as it is, without touching a line.
        host: The ``Host`` value, if any.
        forwarded_for: The incoming ``X-Forwarded-For`` values, in order.
        expect: The ``Expect`` value, if any.
    """

    __slots__ = ("block", "chunked", "connection_tokens", "content_length", "expect",
                 "forwarded_for", "host", "keep_alive", "length_merged", "locates", "minor",
                 "special", "upgrade")

    def __init__(self) -> None:
        self.block = b""
        self.special = False
        self.host: bytes | None = None
        self.forwarded_for: tuple[bytes, ...] = ()
        self.expect: bytes | None = None
        self.minor = 1
        self.content_length: int | None = None
        self.chunked = False
        self.length_merged = False
        self.locates = False
        self.upgrade: bytes | None = None
        """The ``Upgrade`` value, if any (hop-by-hop: acted on, never forwarded as is)."""
        self.connection_tokens: frozenset[bytes] = frozenset()
        self.keep_alive = True

    @property
    def lines(self) -> list[tuple[bytes, bytes]]:
        """``(lower-case name, raw line)`` for every field (computed; the slow path only)."""
        if not self.block:
            return []
        return [(line[:line.index(b":")].lower(), line) for line in self.block.split(b"\r\n")]

    def get(self, name: bytes) -> bytes | None:
        """Return the value of the last ``name`` header (lower-case name), or ``None``."""
        for lname, line in reversed(self.lines):
            if lname == name:
                return line[line.index(b":") + 1:].strip()
        return None

    def end_to_end(self, drop: frozenset[bytes] = frozenset()) -> list[bytes]:
        """Return the raw lines to forward: all but hop-by-hop, Connection-named and ``drop``."""
        named = self.connection_tokens
        out = []
        for lname, line in self.lines:
            if lname in HOP_BY_HOP or lname in named or lname in drop:
                continue
            out.append(line)
        return out

    def forward_block(self, drop: frozenset[bytes],
                      relocate: tuple[bytes, bytes] | None = None) -> bytes:
        """The header lines to forward, CRLF-terminated each (``b""`` when none).

        Args:
            drop: Fields not to forward (besides the hop-by-hop ones).
            relocate: ``(prefix, upstream host:port)`` of an app reached under a path
                prefix: its ``Location`` / ``Content-Location`` values are put back under it.
        """
        relocating = relocate is not None and self.locates
        if not self.special and not relocating:
            return self.block + b"\r\n" if self.block else b""
        if self.length_merged:  # repeated identical lengths go on as one
            lines = self.end_to_end(drop | {b"content-length"})
            lines.append(b"Content-Length: %d" % (self.content_length or 0))
        else:
            lines = self.end_to_end(drop)
        if relocate is not None and relocating:
            rewrite_lines(lines, *relocate)
        return b"\r\n".join(lines) + b"\r\n" if lines else b""


class RequestHead(_Head):
    """A parsed request head. ``target`` is the decoded request target.

    Attributes:
        plain: No body, no ``Expect``, no ``Upgrade``: nothing to stream or negotiate (what
            the fast path can send in one write and answer from callbacks).
    """

    __slots__ = ("expect_continue", "method", "plain", "target")

    def __init__(self) -> None:
        super().__init__()
        self.method = ""
        self.target = ""
        self.expect_continue = False
        self.plain = False


class ResponseHead(_Head):
    """A parsed response head: ``status`` and its ``status_line`` (reason phrase kept)."""

    __slots__ = ("status", "status_line")

    def __init__(self) -> None:
        super().__init__()
        self.status = 0
        self.status_line = b""


_Fields = tuple[bool, bytes | None, tuple[bytes, ...], bytes | None, bool, int | None,
                frozenset[bytes], bool, bool, bytes | None]
"""special, host, X-Forwarded-For values, expect, chunked, content length, Connection tokens,
whether repeated Content-Length values were merged, whether a (Content-)Location is present,
the Upgrade value."""
_CACHE: dict[bytes, _Fields] = {}
_CACHE_SIZE = 1024
_CACHE_MAX_BLOCK = 2048
_H = TypeVar("_H", bound=_Head)
_REQUESTS: dict[bytes, RequestHead] = {}
"""Whole request heads seen lately → their parse (never mutated once parsed)."""
_RESPONSES: dict[bytes, ResponseHead] = {}
"""Whole response heads seen lately → their parse."""


def _parse_fields(head: _Head, block: bytes) -> None:
    """Fill ``head`` from a header block; decide framing and keep-alive.

    Parsing a block is a pure function of its bytes, and clients and upstreams repeat the same
    blocks (an upstream's only change is usually its ``Date``, once a second), so results are
    kept in a small bounded cache keyed by the exact bytes.

    Raises:
        ProtocolError: A malformed line, conflicting lengths, or an unknown coding.
    """
    head.block = block
    if not block:
        head.keep_alive = head.minor == 1
        return
    fields = _CACHE.get(block)
    if fields is None:
        fields = _scan_fields(block)
        if len(block) <= _CACHE_MAX_BLOCK:  # bounds the cache to ~2 MiB whatever clients send
            if len(_CACHE) >= _CACHE_SIZE:
                _CACHE.clear()
            _CACHE[block] = fields
    (head.special, head.host, head.forwarded_for, head.expect, head.chunked,
     head.content_length, tokens, head.length_merged, head.locates, head.upgrade) = fields
    head.connection_tokens = tokens
    if head.minor == 0:
        head.keep_alive = b"keep-alive" in tokens
    else:
        head.keep_alive = b"close" not in tokens


def _scan_fields(block: bytes) -> _Fields:
    """Validate a header block and extract what the proxy acts on.

    The whole block is validated by one regular expression (in C); the loop then only
    lower-cases names to find the few fields the proxy acts on.

    Raises:
        ProtocolError: A malformed line, conflicting lengths, or an unknown coding.
    """
    if _FIELDS.fullmatch(block) is None:
        raise ProtocolError("malformed header block")
    lengths: list[bytes] = []
    codings: list[bytes] = []
    conn: list[bytes] = []
    forwarded_for: list[bytes] = []
    host: bytes | None = None
    expect: bytes | None = None
    special = False
    locates = False
    upgrade: bytes | None = None
    for line in block.split(b"\r\n"):
        colon = line.index(b":")
        lname = line[:colon].lower()
        if lname not in _INTERESTING:
            continue
        value = line[colon + 1:].strip()
        if lname == b"host":
            if host is not None:
                raise ProtocolError("more than one Host")
            host = value
            continue
        if lname == b"content-length":
            if b"," in value:
                lengths.extend(v.strip() for v in value.split(b","))
            else:
                lengths.append(value)
            continue
        if lname in (b"location", b"content-location"):
            locates = True  # rewritten only for an app under a prefix (the caller decides)
            continue
        special = True
        if lname == b"transfer-encoding":
            codings.extend(v.strip().lower() for v in value.split(b",") if v.strip())
        elif lname == b"connection":
            conn.extend(v.strip().lower() for v in value.split(b",") if v.strip())
        elif lname == b"x-forwarded-for":
            forwarded_for.append(value)
        elif lname == b"expect":
            expect = value
        elif lname == b"upgrade":
            upgrade = value if upgrade is None else upgrade + b", " + value
    if lengths and len(set(lengths)) != 1:
        raise ProtocolError("conflicting Content-Length values")
    merged = len(lengths) > 1
    special = special or merged
    chunked = False
    content_length: int | None = None
    if codings:
        if lengths:
            raise ProtocolError("both Content-Length and Transfer-Encoding")
        if codings != [b"chunked"]:  # the edge decodes no other coding, so it cannot frame one
            raise ProtocolError("unsupported transfer coding", 501)
        chunked = True
    elif lengths:
        value = lengths[0]
        if not value.isdigit() or len(value) > 18:
            raise ProtocolError("bad Content-Length")
        content_length = int(value)
    return (special, host, tuple(forwarded_for), expect, chunked, content_length,
            frozenset(conn), merged, locates, upgrade)


def _remember(cache: dict[bytes, _H], data: bytes, head: _H) -> _H:
    """Keep a parsed head for the next identical one (bounded: at most ``_CACHE_SIZE``
    heads of at most ``_CACHE_MAX_BLOCK`` bytes each)."""
    if len(data) <= _CACHE_MAX_BLOCK:
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[data] = head
    return head


def parse_request_head(data: bytes) -> RequestHead:
    """Parse a request head (without the final blank line).

    A parsed head is never changed afterwards, and a client sends the same head again and
    again (one keep-alive connection polling one path, a load balancer's probes), so a head
    identical to a recent one is answered from a bounded cache: the same object.

    Args:
        data: Bytes from the request line up to, excluding, ``\\r\\n\\r\\n``.

    Raises:
        ProtocolError: Not a well-formed HTTP/1.0 or HTTP/1.1 request head.
    """
    head = _REQUESTS.get(data)
    if head is not None:
        return head
    return _remember(_REQUESTS, data, _parse_request(data))


def _parse_request(data: bytes) -> RequestHead:
    first, _, block = data.partition(b"\r\n")
    parts = first.split(b" ")
    if len(parts) != 3:
        raise ProtocolError("malformed request line")
    method, target, version = parts
    if version == b"HTTP/1.1":
        minor = 1
    elif version == b"HTTP/1.0":
        minor = 0
    else:
        status = 505 if version.startswith(b"HTTP/") else 400
        raise ProtocolError("unsupported HTTP version", status)
    if not _TOKEN.match(method) or not target or _BAD_VALUE.search(target):
        raise ProtocolError("malformed request line")
    head = RequestHead()
    head.minor = minor
    head.method = method.decode("ascii")
    head.target = target.decode("latin-1")
    _parse_fields(head, block)
    if minor == 1 and head.host is None:
        raise ProtocolError("HTTP/1.1 request without Host")  # RFC 9112 §3.2
    expect = head.expect
    if expect is not None:
        if expect.lower() != b"100-continue":
            raise ProtocolError("unsupported Expect", 417)
        head.expect_continue = minor == 1
    head.plain = not (head.chunked or head.content_length or head.expect_continue
                      or head.upgrade is not None)
    return head


def parse_response_head(data: bytes) -> ResponseHead:
    """Parse an upstream's response head (without the final blank line); an upstream repeats
    its heads too (changing its ``Date`` once a second), so they are cached the same way.

    Raises:
        ProtocolError: Not a well-formed HTTP/1.x status line and header block.
    """
    head = _RESPONSES.get(data)
    if head is not None:
        return head
    return _remember(_RESPONSES, data, _parse_response(data))


def _parse_response(data: bytes) -> ResponseHead:
    status_line, _, block = data.partition(b"\r\n")
    if not status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) or len(status_line) < 12:
        raise ProtocolError("malformed status line")
    code = status_line[9:12]
    if not code.isdigit() or (len(status_line) > 12 and status_line[12:13] != b" "):
        raise ProtocolError("malformed status line")
    head = ResponseHead()
    head.minor = 1 if status_line[7:8] == b"1" else 0
    head.status = int(code)
    head.status_line = status_line
    _parse_fields(head, block)
    return head
