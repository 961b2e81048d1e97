"""The mesh's secrets key: ``<home>/keys/secrets.key`` (0600), the only thing that opens a
stored secret.

Values are sealed with PyNaCl's :class:`~nacl.secret.SecretBox` (XSalsa20-Poly1305, a random
nonce per value). The app and the name are sealed with the value and checked on opening, so a
ciphertext copied to another app or name (in the home's store or in etcd) does not open there.
The key lives only in the homes of the mesh's members; ``mycelium secret key export|import``
moves it between them.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import nacl.exceptions
import nacl.secret
import nacl.utils

from mycelium.home import Home

from .errors import SecretKeyError, SecretsUnreadable

__all__ = ["KEY_FILE", "SecretKey", "export_key", "import_key", "key_path", "load_key"]

KEY_FILE = "secrets.key"


def key_path(home: Home) -> Path:
    """Where the home keeps its secrets key."""
    return home.keys / KEY_FILE


class SecretKey:
    """A loaded secrets key. Its ``repr`` never shows the key.

    Args:
        raw: The 32 key bytes.

    Raises:
        SecretKeyError: not 32 bytes.
    """

    __slots__ = ("_box", "_raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != nacl.secret.SecretBox.KEY_SIZE:
            raise SecretKeyError(f"a secrets key is {nacl.secret.SecretBox.KEY_SIZE} bytes")
        self._raw = raw
        self._box = nacl.secret.SecretBox(raw)

    def __repr__(self) -> str:
        return "SecretKey(<hidden>)"

    def hex(self) -> str:
        """The key as 64 hex characters (what ``secret key export`` prints)."""
        return self._raw.hex()

    def seal(self, app: str, name: str, value: bytes) -> bytes:
        """``value`` encrypted and authenticated, bound to ``app`` and ``name``."""
        return bytes(self._box.encrypt(_bound(app, name) + value))

    def open(self, app: str, name: str, box: bytes) -> bytes:
        """The value sealed by :meth:`seal` for ``app`` and ``name``.

        Raises:
            SecretsUnreadable: another key sealed it, it was altered, or it belongs to another
                app or name.
        """
        try:
            plain = self._box.decrypt(box)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise SecretsUnreadable(f"secret {name} of {app} does not open with this home's "
                                    "secrets key (another mesh's key? import the mesh's key "
                                    "with `mycelium secret key import`)") from None
        head = _bound(app, name)
        if not plain.startswith(head):
            raise SecretsUnreadable(f"secret {name} of {app} was sealed for another app or name")
        return plain[len(head):]


def _bound(app: str, name: str) -> bytes:
    return f"mycelium-secret\0{app}\0{name}\0".encode()


def load_key(home: Home, *, create: bool = False) -> SecretKey:
    """The home's secrets key; with ``create``, a new random one if there is none yet.

    Raises:
        SecretKeyError: no key (and not ``create``), a key file readable by others, or not
            64 hex characters.
    """
    path = key_path(home)
    try:
        st = path.stat()
    except FileNotFoundError:
        if not create:
            raise SecretKeyError(f"no secrets key in {home.root} (set a secret first, or "
                                 "`mycelium secret key import` the mesh's key)") from None
        return _write(path, nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE), exclusive=True)
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise SecretKeyError(f"secrets key {path} is readable by others "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretKeyError(f"cannot read secrets key {path}: {exc}") from None
    return _parse(text, str(path))


def _parse(text: str, where: str) -> SecretKey:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise SecretKeyError(f"{where}: a secrets key is 64 hex characters") from None
    if len(raw) != nacl.secret.SecretBox.KEY_SIZE:
        raise SecretKeyError(f"{where}: a secrets key is 64 hex characters")
    return SecretKey(raw)


def _write(path: Path, raw: bytes, *, exclusive: bool) -> SecretKey:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, raw.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            try:
                os.link(tmp, path)  # never replaces a key another process just wrote
            except FileExistsError:
                return load_key_at(path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return SecretKey(raw)


def load_key_at(path: Path) -> SecretKey:
    """The key in ``path`` (used when another process created it first).

    Raises:
        SecretKeyError: unreadable or malformed.
    """
    try:
        return _parse(path.read_text(encoding="ascii").strip(), str(path))
    except OSError as exc:
        raise SecretKeyError(f"cannot read secrets key {path}: {exc}") from None


def export_key(home: Home) -> str:
    """The home's key as hex (``secret key export``).

    Raises:
        SecretKeyError: no usable key.
    """
    return load_key(home).hex()


def import_key(home: Home, text: str, *, force: bool = False) -> bool:
    """Install an exported key into ``home``; True if it changed anything.

    Raises:
        SecretKeyError: not a key, or the home already has a different key and not ``force``
            (its stored secrets would no longer open).
    """
    new = _parse(text.strip(), "the imported key")
    path = key_path(home)
    if path.exists():
        if load_key(home).hex() == new.hex():
            return False
        if not force:
            raise SecretKeyError(f"{home.root} already has a different secrets key; its stored "
                                 "secrets would no longer open (use --force to replace it)")
    _write(path, bytes.fromhex(new.hex()), exclusive=False)
    return True
