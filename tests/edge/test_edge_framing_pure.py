"""Strict framing, without sockets: chunk lines, re-framing, trailers, lengths, codings, Host."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.edge.chunked import ChunkedReader, parse_chunk_line
from mycelium.edge.http1 import ProtocolError, parse_request_head, parse_response_head


def _frame(chunks: list[bytes], ext: bytes = b"", trailers: bytes = b"") -> bytes:
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext, c) for c in chunks if c)
    return body + b"0\r\n" + trailers + b"\r\n"


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=6),
       st.lists(st.integers(min_value=0, max_value=4000), max_size=10))
def test_reframing_keeps_the_payload_whatever_the_cuts(chunks, cuts):
    """Any valid body, cut anywhere: the payload survives and the framing is the edge's own."""
    wire = _frame(chunks, b';a=1;b="x y"') + b"NEXT"
    for decode in (False, True):
        reader, buf, out, last = ChunkedReader(decode=decode), bytearray(), b"", 0
        for cut in [*sorted(c % (len(wire) + 1) for c in cuts), len(wire)]:
            buf += wire[last:cut]
            last = max(last, cut)
            out += reader.feed(buf)
        assert reader.done and bytes(buf) == b"NEXT"
        assert out == (b"".join(chunks) if decode else _frame(chunks))
        assert reader.total == sum(map(len, chunks))


@given(st.binary(min_size=1, max_size=40))
def test_a_chunk_line_either_parses_to_its_hex_prefix_or_is_refused(line):
    """No line with a control character or a space outside a quoted string ever passes."""
    try:
        size = parse_chunk_line(line)
    except ProtocolError as exc:
        assert exc.status == 400
        return
    head = line.split(b";", 1)[0]
    assert size == int(head, 16)
    assert not any(c in line for c in b"\x00\r\n")
    assert b" " not in head and b"\t" not in head


@pytest.mark.parametrize("line", [
    b" 5", b"5 ", b"\t5", b"5\t", b"+5", b"0x5", b"5;", b"5;a b", b"5 ;a", b"5;a\x00",
    b"5;a\rb", b"5;a\nb", b"5;a=\"b\x00\"", b"5;=b", b"", b"1" * 16,
])
def test_bad_chunk_lines_are_400(line):
    with pytest.raises(ProtocolError) as info:
        parse_chunk_line(line)
    assert info.value.status == 400


@pytest.mark.parametrize("wire", [
    b"5;a\nb\r\nhello\r\n0\r\n\r\n",                  # bare LF in an extension
    b"5;a\x00\r\nhello\r\n0\r\n\r\n",                 # NUL in an extension
    b"5\r\nhello\r\n0\r\nX-A: b\x00c\r\n\r\n",         # NUL in a trailer
    b"5\r\nhello\r\n0\r\nX-A: b\nX-B: c\r\n\r\n",      # bare LF in a trailer
    b"5\r\nhello\r\n0\r\nX-A: b\rc\r\n\r\n",           # bare CR in a trailer
    b"5\r\nhello\r\n0\r\nX-A : b\r\n\r\n",             # space before the colon
    b"5\r\nhello\r\n0\r\nX-A: b\r\n folded\r\n\r\n",   # obsolete line folding
    b"5\r\nhello\r\n0\r\nno colon\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",                         # data longer than announced
    b"5\n",                                           # bare LF after the size
])
def test_bad_bodies_are_400(wire):
    with pytest.raises(ProtocolError) as info:
        ChunkedReader().feed(bytearray(wire))
    assert info.value.status == 400


def test_trailers_are_validated_then_kept_or_dropped():
    wire = b"0\r\nX-Checksum: abc\r\nContent-Length: 9\r\nHost: evil\r\nServer-Timing: a\r\n\r\n"
    reader = ChunkedReader()
    assert reader.feed(bytearray(wire)) == b"0\r\nX-Checksum: abc\r\nServer-Timing: a\r\n\r\n"
    assert ChunkedReader(decode=True).feed(bytearray(wire)) == b""


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"chunked, chunked", b"identity",
                                    b"gzip", b"chunked, gzip", b"x-custom,chunked"])
def test_any_coding_but_a_lone_chunked_is_501(coding):
    with pytest.raises(ProtocolError) as info:
        parse_request_head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + coding)
    assert info.value.status == 501
    with pytest.raises(ProtocolError):
        parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding)


def test_identical_lengths_merge_and_differing_ones_are_400():
    for block in (b"Content-Length: 3, 3", b"Content-Length: 3\r\nContent-Length: 3",
                  b"Content-Length: 3,3\r\nContent-Length: 3"):
        head = parse_request_head(b"POST / HTTP/1.1\r\nHost: a\r\n" + block + b"\r\nX-B: 1")
        assert head.content_length == 3
        assert head.forward_block(frozenset()) == b"Host: a\r\nX-B: 1\r\nContent-Length: 3\r\n"
    for block in (b"Content-Length: 3, 4", b"Content-Length: 3\r\nContent-Length: 03",
                  b"Content-Length: 3,"):
        with pytest.raises(ProtocolError) as info:
            parse_request_head(b"POST / HTTP/1.1\r\nHost: a\r\n" + block)
        assert info.value.status == 400


def test_http11_needs_a_host_and_http10_does_not():
    with pytest.raises(ProtocolError) as info:
        parse_request_head(b"GET / HTTP/1.1\r\nX-A: 1")
    assert info.value.status == 400
    with pytest.raises(ProtocolError):
        parse_request_head(b"GET / HTTP/1.1")
    assert parse_request_head(b"GET / HTTP/1.0").host is None
