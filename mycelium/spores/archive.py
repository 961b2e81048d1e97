"""The spore's zip container: one canonical byte layout, written and checked here.

A spore is a zip with exactly two stored (uncompressed) regular files, ``manifest.json`` then
``binary``, with fixed timestamps and attributes. Because the layout is canonical, every byte
outside the two entries' data can be rebuilt from the central directory and compared, so a
flipped bit anywhere in the container is caught; because entries are stored, nothing is ever
decompressed and a zip bomb cannot expand. The precise checks run first so that a hostile
archive is rejected with the reason that matters (path traversal, symlink, limits), and the
canonical comparison is the final catch-all.
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from .errors import SporeError
from .limits import Limits

__all__ = [
    "BINARY",
    "MANIFEST",
    "Layout",
    "binary_header",
    "check_archive",
    "manifest_header",
    "trailer",
]

MANIFEST = "manifest.json"
BINARY = "binary"
NAMES = (MANIFEST, BINARY)
MAX_ENTRIES = 64  # more is hostile: refuse before parsing the central directory

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_LOCAL_SIG = 0x04034B50
_CENTRAL_SIG = 0x02014B50
_EOCD_SIG = 0x06054B50
_VERSION = 20  # zip 2.0: what stored entries need
_MADE_BY = (3 << 8) | _VERSION  # unix, so external attributes carry the file type
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01: reproducible, like reproducible-builds zips
_DOS_TIME = 0
_MODES = {MANIFEST: stat.S_IFREG | 0o644, BINARY: stat.S_IFREG | 0o755}


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the two entries' data lie in a checked spore file (byte offsets)."""

    manifest_offset: int
    manifest_size: int
    manifest_crc: int
    binary_offset: int
    binary_size: int
    binary_crc: int
    archive_size: int


def _local(name: str, crc: int, size: int) -> bytes:
    raw = name.encode("ascii")
    return _LOCAL.pack(_LOCAL_SIG, _VERSION, 0, zipfile.ZIP_STORED, _DOS_TIME, _DOS_DATE, crc,
                       size, size, len(raw), 0) + raw


def manifest_header(crc: int, size: int) -> bytes:
    """The local header that starts every spore (the manifest's data follows it)."""
    return _local(MANIFEST, crc, size)


def binary_header(crc: int, size: int) -> bytes:
    """The local header of the ``binary`` entry (its data follows it)."""
    return _local(BINARY, crc, size)


def trailer(manifest_crc: int, manifest_size: int, binary_crc: int, binary_size: int) -> bytes:
    """The central directory and end record that close a spore."""
    binary_at = len(manifest_header(manifest_crc, manifest_size)) + manifest_size
    cd_at = binary_at + len(binary_header(binary_crc, binary_size)) + binary_size
    central = b""
    for name, crc, size, offset in ((MANIFEST, manifest_crc, manifest_size, 0),
                                    (BINARY, binary_crc, binary_size, binary_at)):
        raw = name.encode("ascii")
        central += _CENTRAL.pack(_CENTRAL_SIG, _MADE_BY, _VERSION, 0, zipfile.ZIP_STORED,
                                 _DOS_TIME, _DOS_DATE, crc, size, size, len(raw), 0, 0, 0, 0,
                                 _MODES[name] << 16, offset) + raw
    return central + _EOCD.pack(_EOCD_SIG, 0, 0, 2, 2, len(central), cd_at, 0)


def _check_path(name: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if (name.startswith(("/", "\\")) or ".." in parts or "\x00" in name
            or (len(name) > 1 and name[1] == ":")):
        raise SporeError(f"unsafe path {name!r} in archive (absolute or '..')")


def _check_type(info: zipfile.ZipInfo) -> None:
    name = info.orig_filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise SporeError(f"entry {name!r} is a symlink, not a regular file")
    if name.endswith("/") or stat.S_ISDIR(mode):
        raise SporeError(f"entry {name!r} is a directory, not a regular file")
    if info.create_system != 3 or stat.S_IFMT(mode) == 0:
        raise SporeError(f"entry {name!r} does not declare a unix file type "
                         "(not a regular file)")
    if not stat.S_ISREG(mode):
        raise SporeError(f"entry {name!r} is not a regular file (type {stat.S_IFMT(mode):o})")


def _check_entry(info: zipfile.ZipInfo, limits: Limits, archive_size: int) -> None:
    name = info.orig_filename
    limit = limits.max_manifest_bytes if name == MANIFEST else limits.max_binary_bytes
    if info.file_size > limit:
        raise SporeError(f"entry {name!r} declares {info.file_size} bytes, over the limit of "
                         f"{limit} bytes")
    if info.file_size > limits.max_ratio * max(info.compress_size, 1):
        raise SporeError(f"entry {name!r} has a compression ratio of "
                         f"{info.file_size // max(info.compress_size, 1)}:1, over the limit of "
                         f"{limits.max_ratio:g}:1 (zip bomb?)")
    if info.compress_size > archive_size:
        raise SporeError(f"entry {name!r} declares {info.compress_size} compressed bytes, more "
                         "than the archive holds")
    if info.flag_bits & 0x1:
        raise SporeError(f"entry {name!r} is encrypted")
    if info.compress_type != zipfile.ZIP_STORED:
        raise SporeError(f"entry {name!r} is compressed (method {info.compress_type}); "
                         "spore entries are stored uncompressed")
    if info.compress_size != info.file_size:
        raise SporeError(f"entry {name!r} declares {info.file_size} bytes uncompressed but "
                         f"{info.compress_size} stored")


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    if offset < 0 or size < 0:
        raise SporeError(f"archive points outside itself (offset {offset})")
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise SporeError("archive is truncated")
    return data


def _data_offset(fd: int, info: zipfile.ZipInfo) -> int:
    """Check ``info``'s local header against the central directory; return its data offset."""
    name = info.orig_filename
    header = _pread_exact(fd, _LOCAL.size, info.header_offset)
    (sig, _ver, flags, method, _time, _date, crc, csize, usize, nlen,
     xlen) = _LOCAL.unpack(header)
    if sig != _LOCAL_SIG:
        raise SporeError(f"entry {name!r}: bad local header signature")
    raw_name = _pread_exact(fd, nlen, info.header_offset + _LOCAL.size)
    if raw_name != name.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
        raise SporeError(f"entry {name!r}: local header names {raw_name!r}")
    if (method, crc, csize, usize, flags) != (info.compress_type, info.CRC, info.compress_size,
                                              info.file_size, info.flag_bits):
        raise SporeError(f"entry {name!r}: local header disagrees with the central directory "
                         f"(declared size {usize} vs {info.file_size}, crc {crc:08x} vs "
                         f"{info.CRC:08x})")
    return info.header_offset + _LOCAL.size + nlen + xlen


def _check_end_record(fd: int, size: int) -> None:
    """Bound the central directory before the zip parser sees it (no giant entry lists)."""
    if size < _EOCD.size:
        raise SporeError(f"not a valid zip archive: {size} bytes is too small")
    end = _pread_exact(fd, _EOCD.size, size - _EOCD.size)
    sig, _disk, _cd_disk, n_here, n_total, cd_size, _cd_at, comment = _EOCD.unpack(end)
    if sig != _EOCD_SIG or comment != 0:
        raise SporeError("not a valid spore archive: no zip end record at its very end "
                         "(trailing data, a comment, or not a zip)")
    if max(n_here, n_total) > MAX_ENTRIES:
        raise SporeError(f"archive holds {max(n_here, n_total)} entries; a spore holds "
                         "exactly manifest.json and binary")
    if cd_size > MAX_ENTRIES * (_CENTRAL.size + 1024):
        raise SporeError(f"archive's central directory is {cd_size} bytes, too large")


def check_archive(f: BinaryIO, limits: Limits) -> Layout:
    """Check the container of an open spore file without reading the entries' data.

    Returns:
        Where the manifest's and the binary's data lie.

    Raises:
        SporeError: The precise reason the container is not a safe, canonical spore.
    """
    fd = f.fileno()
    size = os.fstat(fd).st_size
    if size > limits.max_archive_bytes:
        raise SporeError(f"archive is {size} bytes, over the limit of "
                         f"{limits.max_archive_bytes} bytes")
    _check_end_record(fd, size)
    try:
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise SporeError(f"not a valid zip archive: {exc}") from None
    if len(infos) > MAX_ENTRIES:
        raise SporeError(f"archive holds {len(infos)} entries; a spore holds exactly "
                         "manifest.json and binary")
    for info in infos:
        _check_path(info.orig_filename)
    for info in infos:
        _check_type(info)
    seen: set[str] = set()
    for info in infos:
        if info.orig_filename in seen:
            raise SporeError(f"duplicate entry {info.orig_filename!r} in archive")
        seen.add(info.orig_filename)
    for info in infos:
        if info.orig_filename not in NAMES:
            raise SporeError(f"unexpected entry {info.orig_filename!r}; a spore holds exactly "
                             "manifest.json and binary")
    for name in NAMES:
        if name not in seen:
            raise SporeError(f"missing entry {name!r} in archive")
    for info in infos:
        _check_entry(info, limits, size)
    by_name = {info.orig_filename: info for info in infos}
    m, b = by_name[MANIFEST], by_name[BINARY]
    m_at, b_at = _data_offset(fd, m), _data_offset(fd, b)
    layout = Layout(m_at, m.file_size, m.CRC, b_at, b.file_size, b.CRC, size)
    _check_canonical(fd, layout)
    return layout


def _check_canonical(fd: int, layout: Layout) -> None:
    """Compare every byte outside the entries' data with the canonical layout."""
    head = manifest_header(layout.manifest_crc, layout.manifest_size)
    mid = binary_header(layout.binary_crc, layout.binary_size)
    tail = trailer(layout.manifest_crc, layout.manifest_size, layout.binary_crc,
                   layout.binary_size)
    b_end = len(head) + layout.manifest_size + len(mid) + layout.binary_size
    expected_size = b_end + len(tail)
    if (layout.manifest_offset != len(head)
            or layout.binary_offset != len(head) + layout.manifest_size + len(mid)):
        raise SporeError("archive is not in canonical spore form (entries out of order, "
                         "extra fields or gaps)")
    if layout.archive_size != expected_size:
        raise SporeError(f"archive is not in canonical spore form ({layout.archive_size} bytes, "
                         f"expected {expected_size}: prefix, gaps or trailing data)")
    for at, want in ((0, head), (layout.manifest_offset + layout.manifest_size, mid),
                     (b_end, tail)):
        got = os.pread(fd, len(want), at)
        if got != want:
            diff = next((i for i, (x, y) in enumerate(zip(got, want, strict=False)) if x != y),
                        min(len(got), len(want)))
            raise SporeError(f"archive is not in canonical spore form (byte {at + diff} differs)")
