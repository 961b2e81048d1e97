"""Flow A's core: pack a binary into a signed spore, verify one, extract one.

Everything streams in 1 MiB chunks, so a 200 MB binary is never held in memory. ``verify``
reads the spore once: the file's sha256 (the digest) and the binary's sha256 and CRC are
computed in the same pass, after the container, the manifest, the signature and the signer
were checked from a few small reads. ``extract`` verifies first, then copies the binary into a
private directory re-hashing it as it is written.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from .archive import (
    BINARY,
    MANIFEST,
    Layout,
    binary_header,
    check_archive,
    manifest_header,
    trailer,
)
from .errors import ManifestError, SporeError, SporeInputError
from .keys import public_hex
from .limits import Limits
from .manifest import Manifest, canonical_json, load_input_manifest, parse_spore_manifest

__all__ = ["Packed", "Verified", "extract", "inspect", "open_regular", "pack", "verify"]

CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Verified:
    """A spore that passed every check: its digest (sha256 of the file) and manifest."""

    digest: str
    manifest: Manifest


@dataclass(frozen=True, slots=True)
class Packed:
    """What :func:`pack` wrote: the spore's path, digest and signed manifest."""

    path: Path
    digest: str
    manifest: Manifest


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hash_fd(fd: int) -> tuple[str, int, int]:
    """sha256, crc32 and length of everything readable from ``fd`` (from its start)."""
    sha, crc, n = hashlib.sha256(), 0, 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        got = os.readv(fd, [buf])
        if not got:
            return sha.hexdigest(), crc, n
        sha.update(view[:got])
        crc = zlib.crc32(view[:got], crc)
        n += got


def pack(binary: Path | str, manifest: Manifest | Mapping[str, Any] | Path | str,
         key: SigningKey, out: Path | str, *, limits: Limits | None = None,
         created_at: str | None = None) -> Packed:
    """Write a signed spore of ``binary`` and ``manifest`` to ``out`` (atomically).

    Args:
        binary: The workload's executable.
        manifest: An input manifest: a :class:`Manifest`, its JSON data, or a JSON file.
        key: The signing key; its public half becomes the manifest's ``signer``.
        out: Where to write the spore (its directory must exist).
        limits: Size limits (the binary must fit ``max_binary_bytes``).
        created_at: Override the RFC 3339 timestamp (reproducible spores in tests).

    Raises:
        ManifestError: (exit 2) the manifest is invalid.
        SporeInputError: (exit 2) the binary is missing, not a regular file or too large.
        SporeError: the binary changed while it was being packed.
    """
    limits = limits or Limits()
    base = load_input_manifest(manifest)
    binary, out = Path(binary), Path(out)
    fd = open_regular(binary, "binary")
    try:
        st = os.fstat(fd)
        if st.st_size > limits.max_binary_bytes:
            raise SporeInputError(f"binary {binary} is {st.st_size} bytes, over the limit of "
                                  f"{limits.max_binary_bytes} bytes")
        sha, crc, size = _hash_fd(fd)
        signed = replace(base, binary_sha256=sha, binary_size=size,
                         created_at=created_at or _now_rfc3339(), signer=public_hex(key))
        signature = key.sign(canonical_json(signed.to_dict(with_signature=False))).signature
        signed = replace(signed, signature=signature.hex())
        manifest_bytes = canonical_json(signed.to_dict())
        if len(manifest_bytes) > limits.max_manifest_bytes:
            raise ManifestError(f"manifest: {len(manifest_bytes)} bytes once signed, over the "
                                f"limit of {limits.max_manifest_bytes} bytes")
        digest = _write_spore(fd, manifest_bytes, crc, size, out)
    finally:
        os.close(fd)
    return Packed(out, digest, signed)


def _write_spore(binary_fd: int, manifest_bytes: bytes, crc: int, size: int, out: Path) -> str:
    """Stream the canonical layout into a temp file beside ``out``, fsync, rename."""
    m_crc = zlib.crc32(manifest_bytes)
    tmp_fd, tmp_name = tempfile.mkstemp(prefix=".", suffix=".partial", dir=out.parent)
    try:
        with os.fdopen(tmp_fd, "wb", buffering=0) as f:
            os.fchmod(f.fileno(), 0o644)
            digest = hashlib.sha256()

            def emit(data: bytes | memoryview) -> None:
                digest.update(data)
                f.write(data)

            emit(manifest_header(m_crc, len(manifest_bytes)) + manifest_bytes)
            emit(binary_header(crc, size))
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            copied, again = 0, 0
            os.lseek(binary_fd, 0, os.SEEK_SET)
            while copied < size:
                got = os.readv(binary_fd, [view[:min(CHUNK, size - copied)]])
                if not got:
                    break
                again = zlib.crc32(view[:got], again)
                emit(view[:got])
                copied += got
            if copied != size or again != crc or os.read(binary_fd, 1):
                raise SporeError("the binary changed while it was being packed; try again")
            emit(trailer(m_crc, len(manifest_bytes), crc, size))
            os.fsync(f.fileno())
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def _check_manifest(fd: int, layout: Layout, trusted: frozenset[str],
                    limits: Limits) -> tuple[Manifest, bytes]:
    raw = os.pread(fd, layout.manifest_size, layout.manifest_offset)
    if len(raw) != layout.manifest_size:
        raise SporeError("archive is truncated")
    if zlib.crc32(raw) != layout.manifest_crc:
        raise SporeError(f"entry {MANIFEST!r} fails its CRC check (corrupted)")
    manifest, data = parse_spore_manifest(raw)
    unsigned = {k: v for k, v in data.items() if k != "signature"}
    try:
        VerifyKey(bytes.fromhex(manifest.signer)).verify(
            canonical_json(unsigned), bytes.fromhex(manifest.signature))
    except BadSignatureError:
        raise SporeError("bad signature: the manifest was not signed by its signer "
                         f"{manifest.signer[:16]}… (tampered?)") from None
    except (CryptoError, ValueError) as exc:
        raise SporeError(f"bad signature: {exc}") from None
    if manifest.signer not in trusted:
        raise SporeError(f"signer {manifest.signer} is not trusted by this home "
                         "(mycelium trust PUBKEY adds a signer)")
    if manifest.binary_size != layout.binary_size:
        raise SporeError(f"binary size mismatch: manifest says {manifest.binary_size} bytes, "
                         f"archive holds {layout.binary_size}")
    if manifest.binary_size > limits.max_binary_bytes:
        raise SporeError(f"binary is {manifest.binary_size} bytes, over the limit of "
                         f"{limits.max_binary_bytes} bytes")
    return manifest, raw


def _verify_open(f: BinaryIO, trusted: frozenset[str], limits: Limits,
                 expected_digest: str | None) -> tuple[Verified, Layout]:
    fd = f.fileno()
    try:
        layout = check_archive(f, limits)
        manifest, manifest_raw = _check_manifest(fd, layout, trusted, limits)
    except SporeError:
        # A repo file that is not what its name says is the precise reason, whatever broke.
        if (expected_digest is not None and os.fstat(fd).st_size <= limits.max_archive_bytes
                and _hash_fd(fd)[0] != expected_digest):
            raise SporeError(f"repo file {expected_digest}.spore does not match its name "
                             "(corrupted or tampered)") from None
        raise
    # One pass over the whole file: the digest, the binary's sha256 and CRC, and the manifest
    # bytes again (so what was checked above is what was hashed).
    file_sha, bin_sha, bin_crc = hashlib.sha256(), hashlib.sha256(), 0
    m_lo, m_hi = layout.manifest_offset, layout.manifest_offset + layout.manifest_size
    b_lo, b_hi = layout.binary_offset, layout.binary_offset + layout.binary_size
    seen_manifest = bytearray()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    pos = 0
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        got = os.readv(fd, [buf])
        if not got:
            break
        chunk = view[:got]
        file_sha.update(chunk)
        lo, hi = max(pos, b_lo), min(pos + got, b_hi)
        if lo < hi:
            bin_sha.update(chunk[lo - pos:hi - pos])
            bin_crc = zlib.crc32(chunk[lo - pos:hi - pos], bin_crc)
        lo, hi = max(pos, m_lo), min(pos + got, m_hi)
        if lo < hi:
            seen_manifest += chunk[lo - pos:hi - pos]
        pos += got
    if pos != layout.archive_size or bytes(seen_manifest) != manifest_raw:
        raise SporeError("the spore file changed while it was being verified")
    digest = file_sha.hexdigest()
    if expected_digest is not None and digest != expected_digest:
        raise SporeError(f"repo file {expected_digest}.spore does not match its name "
                         f"(its sha256 is {digest}): corrupted or tampered")
    if bin_sha.hexdigest() != manifest.binary_sha256:
        raise SporeError(f"binary hash mismatch: manifest says {manifest.binary_sha256}, "
                         f"binary is {bin_sha.hexdigest()}")
    if bin_crc != layout.binary_crc:
        raise SporeError(f"entry {BINARY!r} fails its CRC check (corrupted)")
    return Verified(digest, manifest), layout


def open_regular(path: Path, what: str) -> int:
    """Open ``path`` for reading, refusing anything but a regular file.

    ``O_NONBLOCK`` keeps a FIFO put in a spore's place from hanging the open; the flag is
    cleared once the descriptor is known to be a regular file.

    Raises:
        SporeInputError: It cannot be opened or is not a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SporeInputError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SporeInputError(f"{what} {path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def _open_spore(path: Path) -> BinaryIO:
    return os.fdopen(open_regular(path, "spore"), "rb")


def verify(spore_path: Path | str, trusted: frozenset[str], limits: Limits | None = None, *,
           expected_digest: str | None = None) -> Verified:
    """Check everything about a spore before any of it is used.

    Args:
        spore_path: The spore file.
        trusted: Public keys (hex) whose signatures this home accepts.
        limits: Size limits (defaults: :class:`Limits`).
        expected_digest: For a repo file, the digest its name claims.

    Raises:
        SporeError: The precise reason: container, limits, manifest, signature, signer,
            binary size or hash, or a digest that does not match the repo file's name.
        ManifestError: (exit 1) the manifest inside the spore is invalid.
        SporeInputError: (exit 2) the file does not exist or is not a regular file.
    """
    with _open_spore(Path(spore_path)) as f:
        verified, _ = _verify_open(f, trusted, limits or Limits(), expected_digest)
    return verified


def extract(spore_path: Path | str, dest_dir: Path | str, trusted: frozenset[str],
            limits: Limits | None = None, *, expected_digest: str | None = None) -> Path:
    """Verify a spore, then write its binary (mode 0755) into ``dest_dir`` (made 0700).

    The binary is copied from the same open file that was verified and re-hashed as it is
    written; it is renamed into place only once its hash matches.

    Returns:
        The path of the extracted binary, ``dest_dir/binary``.

    Raises:
        SporeError: Verification failed, ``dest_dir`` is not a private directory, or the
            spore changed during extraction. Nothing is left in ``dest_dir`` then.
    """
    dest = Path(dest_dir)
    with _open_spore(Path(spore_path)) as f:
        verified, layout = _verify_open(f, trusted, limits or Limits(), expected_digest)
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        if dest.is_symlink() or not dest.is_dir():
            raise SporeError(f"extraction directory {dest} is not a directory")
        os.chmod(dest, 0o700)
        target = dest / BINARY
        tmp = dest / f".{BINARY}.{os.getpid()}.partial"
        tmp.unlink(missing_ok=True)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
        try:
            sha = hashlib.sha256()
            fd, pos = f.fileno(), layout.binary_offset
            end = pos + layout.binary_size
            while pos < end:
                chunk = os.pread(fd, min(CHUNK, end - pos), pos)
                if not chunk:
                    break
                sha.update(chunk)
                os.write(out, chunk)  # regular file: full writes
                pos += len(chunk)
            if pos != end or sha.hexdigest() != verified.manifest.binary_sha256:
                raise SporeError("the spore changed during extraction (binary hash mismatch)")
            os.fchmod(out, 0o755)
            # not fsynced: an instance's copy is rebuilt from the repo whenever it is needed
            # again (a machine crash leaves no instance to run it), and a mass start would
            # otherwise queue one fsync per instance behind the fabric's plan writes
            os.close(out)
            out = -1
            os.replace(tmp, target)
        except BaseException:
            if out >= 0:
                os.close(out)
            tmp.unlink(missing_ok=True)
            raise
    return target


def inspect(spore_path: Path | str, trusted: frozenset[str] = frozenset(),
            limits: Limits | None = None) -> tuple[str, Manifest, bool]:
    """Read a spore's manifest safely, without requiring a trusted signer.

    Returns:
        The digest, the manifest, and whether the signer is trusted.

    Raises:
        SporeError: The container or the manifest is bad, or the signature is invalid.
    """
    limits = limits or Limits()
    with _open_spore(Path(spore_path)) as f:
        layout = check_archive(f, limits)
        manifest_raw = os.pread(f.fileno(), layout.manifest_size, layout.manifest_offset)
        manifest, _ = parse_spore_manifest(manifest_raw)
        # The signature must hold; whether its signer is trusted is reported, not required.
        _check_manifest(f.fileno(), layout, frozenset({manifest.signer}), limits)
        digest, _, _ = _hash_fd(f.fileno())
    return digest, manifest, manifest.signer in trusted
