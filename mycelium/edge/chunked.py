"""Chunked bodies re-framed by the edge: validated, then written anew, never forwarded raw.

A proxy that passes chunk framing on byte for byte also passes on whatever its upstream might
read differently from it (a bare LF, a NUL in an extension, whitespace around a size): the
classic request-smuggling shapes. So the edge parses each chunk strictly (RFC 9112 §7.1) and
writes its own framing: a bare hexadecimal size, no extensions (they are hop-by-hop and no
application relies on them), the payload, and the trailer section validated field by field.

Trailers (RFC 9112 §7.1.2, RFC 9110 §6.5): a malformed trailer line is a 400; well-formed
trailer fields are forwarded, except those a sender must not put in trailers (framing,
routing, authentication, response control, hop-by-hop), which are dropped, since a recipient
that merged them into the header section could be steered by them. When the body is decoded
for an HTTP/1.0 peer the trailers go nowhere.
"""

from __future__ import annotations

import re

from mycelium.edge.http1 import HOP_BY_HOP, ProtocolError

__all__ = ["FORBIDDEN_TRAILERS", "ChunkedReader", "parse_chunk_line"]

_MAX_CHUNK_LINE = 4096
_MAX_TRAILERS = 16384
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})((?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb"|"
                         + _QUOTED + rb"))?)*)")
"""A chunk-size line: the size right at the start, then extensions without any whitespace
(outside quoted strings), so no control character and no stray space can pass."""
_TRAILER_FIELD = re.compile(_TOKEN + rb":[\t\x20-\x7e\x80-\xff]*")

FORBIDDEN_TRAILERS = HOP_BY_HOP | frozenset({
    b"content-length", b"host", b"content-encoding", b"content-type", b"content-range",
    b"authorization", b"proxy-authorization", b"proxy-authenticate", b"www-authenticate",
    b"set-cookie", b"cookie", b"cache-control", b"expect", b"max-forwards", b"pragma",
    b"range", b"age", b"expires", b"date", b"location", b"retry-after", b"vary", b"warning",
    b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"if-range",
    b"x-mycelium-edge",
})
"""Trailer fields the edge drops: ones that would change framing, routing, authentication or
how the message is processed if a recipient merged them into the headers (RFC 9110 §6.5.1)."""


def parse_chunk_line(line: bytes) -> int:
    """Return the size a chunk-size line announces; extensions are checked, then ignored.

    Raises:
        ProtocolError: Whitespace or junk around the size, or a malformed extension
            (NUL, CR, LF or anything else outside the grammar).
    """
    match = _CHUNK_LINE.fullmatch(line)
    if match is None:
        raise ProtocolError("bad chunk size line")
    return int(match.group(1), 16)


class ChunkedReader:
    """Walks a chunked body incrementally and re-frames it (or decodes it).

    Args:
        decode: Pass on only the payload (for an HTTP/1.0 peer) instead of new framing.

    Attributes:
        total: Payload bytes seen so far.
        done: The last chunk and the trailer section were consumed.
        trailers: The trailer lines kept (raw, valid, not forbidden), once ``done``.
    """

    __slots__ = ("decode", "done", "remaining", "state", "total", "trailer_bytes", "trailers")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, decode: bool = False) -> None:
        self.decode = decode
        self.state = self._SIZE
        self.remaining = 0
        self.total = 0
        self.done = False
        self.trailers: list[bytes] = []
        self.trailer_bytes = 0

    def feed(self, buf: bytearray) -> bytes:
        """Consume what can be consumed from the front of ``buf``.

        Returns:
            The bytes to pass on: the edge's own framing around the payload, or the payload
            alone when decoding. Bytes after the end of the body stay in ``buf``.

        Raises:
            ProtocolError: Malformed chunk framing or trailer section (all 400).
        """
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while pos < n and not self.done:
            if self.state == self._DATA:
                take = min(self.remaining, n - pos)
                out.append(bytes(buf[pos:pos + take]))
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = self._DATA_END
            elif self.state == self._DATA_END:
                if n - pos < 2:
                    if buf[pos:pos + 1] != b"\r":
                        raise ProtocolError("missing CRLF after chunk data")
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("missing CRLF after chunk data")
                if not self.decode:
                    out.append(b"\r\n")
                pos += 2
                self.state = self._SIZE
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > _MAX_CHUNK_LINE or buf.find(b"\n", pos) >= 0:
                        raise ProtocolError("bad chunk line")  # too long, or a bare LF
                    break
                line = bytes(buf[pos:eol])
                pos = eol + 2
                if self.state == self._SIZE:
                    if len(line) > _MAX_CHUNK_LINE:
                        raise ProtocolError("chunk line too long")
                    size = parse_chunk_line(line)
                    self.total += size
                    if size:
                        self.state, self.remaining = self._DATA, size
                        if not self.decode:
                            out.append(b"%x\r\n" % size)
                    else:
                        self.state = self._TRAILER
                elif line:
                    self._trailer(line)
                else:  # the blank line closes the trailer section
                    self.done = True
                    if not self.decode:
                        out.append(b"".join([b"0\r\n", *(t + b"\r\n" for t in self.trailers),
                                             b"\r\n"]))
        del buf[:pos]
        return b"".join(out)

    def _trailer(self, line: bytes) -> None:
        """Validate one trailer line; keep it unless its field is forbidden in trailers.

        Raises:
            ProtocolError: Not a valid field line (NUL, bare CR, space before the colon,
                obsolete folding), or too many trailer bytes.
        """
        self.trailer_bytes += len(line) + 2
        if self.trailer_bytes > _MAX_TRAILERS:
            raise ProtocolError("trailer section too large")
        if _TRAILER_FIELD.fullmatch(line) is None:
            raise ProtocolError("malformed trailer field")
        name = line[:line.index(b":")].lower()
        if name not in FORBIDDEN_TRAILERS:
            self.trailers.append(line)
