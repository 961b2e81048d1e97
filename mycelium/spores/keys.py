"""Ed25519 signing keys and the trusted-signer set of a home.

A key pair lives in ``<home>/keys/<name>.key`` (the 32-byte seed as hex, mode 0600) and
``<name>.pub``; ``keygen`` also copies the public key into ``<home>/trusted/<name>.pub`` so that
the home trusts what it signs. Like ssh, a private key readable by anyone but its owner is
refused rather than used.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from mycelium._logger import get_logger
from mycelium.home import Home

from .errors import KeyFileError

__all__ = ["keygen", "load_signing_key", "load_trusted", "public_hex", "trust"]

log = get_logger(__name__)

KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _check_name(name: str) -> str:
    if not KEY_NAME_RE.fullmatch(name):
        raise KeyFileError(f"bad key name {name!r}: use 1-64 letters, digits and ._- "
                           "(starting with a letter or digit)")
    return name


def public_hex(key: SigningKey) -> str:
    """The public half of ``key`` as 64 lowercase hex characters (a manifest's ``signer``)."""
    return bytes(key.verify_key).hex()


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` set at creation (never briefly wider)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def keygen(home: Home, name: str = "default", *, force: bool = False) -> str:
    """Create an Ed25519 key pair in ``home`` and trust its public key.

    Returns:
        The public key as hex.

    Raises:
        KeyFileError: Bad name, or the key exists and ``force`` is false (nothing changes).
    """
    _check_name(name)
    home.ensure()
    key_path = home.keys / f"{name}.key"
    if not force and (key_path.exists() or key_path.is_symlink()):
        raise KeyFileError(f"key {name!r} already exists at {key_path}; "
                           "use --force to replace it")
    key = SigningKey.generate()
    pub = public_hex(key)
    _write_atomic(key_path, bytes(key).hex().encode() + b"\n", 0o600)
    _write_atomic(home.keys / f"{name}.pub", pub.encode() + b"\n", 0o644)
    _write_atomic(home.trusted / f"{name}.pub", pub.encode() + b"\n", 0o644)
    return pub


def load_signing_key(home: Home, name: str = "default") -> SigningKey:
    """Load the private key ``name``, refusing one that others can read or write.

    Raises:
        KeyFileError: Missing, not a regular file, permissions wider than 0600, or malformed.
    """
    _check_name(name)
    path = home.keys / f"{name}.key"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise KeyFileError(f"no signing key {name!r} at {path} "
                           f"(run: mycelium keygen --name {name})") from None
    except OSError as exc:
        raise KeyFileError(f"cannot open signing key {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"signing key {path} is not a regular file")
        perms = stat.S_IMODE(st.st_mode)
        if perms & 0o177:
            raise KeyFileError(f"permissions {perms:04o} for signing key {path} are too open; "
                               "it must be accessible only by its owner (chmod 600)")
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    text = raw.decode("ascii", "replace").strip()
    if not _HEX64.fullmatch(text):
        raise KeyFileError(f"signing key {path} is malformed (expected 64 hex characters)")
    try:
        return SigningKey(bytes.fromhex(text))
    except (CryptoError, ValueError) as exc:
        raise KeyFileError(f"signing key {path} is malformed: {exc}") from None


def load_trusted(home: Home) -> frozenset[str]:
    """The trusted signers of ``home``: every ``trusted/*.pub`` holding a valid public key.

    A malformed file is skipped with a warning — it can only shrink the trusted set.
    """
    trusted: set[str] = set()
    try:
        paths = sorted(home.trusted.glob("*.pub"))
    except OSError:
        return frozenset()
    for path in paths:
        try:
            text = path.read_text("ascii").strip().lower()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("ignoring unreadable trusted key %s: %s", path, exc)
            continue
        if not _HEX64.fullmatch(text):
            log.warning("ignoring malformed trusted key %s", path)
            continue
        trusted.add(text)
    return frozenset(trusted)


def trust(home: Home, public_key: str, name: str | None = None) -> Path:
    """Add ``public_key`` (hex) to the trusted signers of ``home``.

    Returns:
        The path of the trusted key file.

    Raises:
        KeyFileError: The key is not 64 hex characters or not a valid Ed25519 point, the name
            is bad, or another key already uses that name.
    """
    pub = public_key.strip().lower()
    if not _HEX64.fullmatch(pub):
        raise KeyFileError("public key must be 64 hex characters")
    try:
        VerifyKey(bytes.fromhex(pub))
    except (CryptoError, ValueError) as exc:
        raise KeyFileError(f"not a valid Ed25519 public key: {exc}") from None
    name = _check_name(name if name is not None else pub[:16])
    home.ensure()
    path = home.trusted / f"{name}.pub"
    if path.exists():
        existing = path.read_text("ascii", "replace").strip().lower()
        if existing == pub:
            return path
        raise KeyFileError(f"trusted key name {name!r} is already used by another key "
                           f"({path}); choose another --name")
    _write_atomic(path, pub.encode() + b"\n", 0o644)
    return path
