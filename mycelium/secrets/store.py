"""Where sealed secrets are kept: the home's store, or etcd (ciphertext only, either way).

A store knows nothing of keys: it keeps, per app and name, the sealed value (see
:mod:`.key`) and the time it was last set. :class:`Secrets` is the one place that seals and
opens, so every value that reaches a store is already ciphertext.

- :class:`HomeStore`: ``<home>/state/secrets/<app>.json`` (0600, written by rename under a
  ``flock``), used by a single-machine mesh and by ``mycelium secret`` when no mesh runs.
- :class:`EtcdSecretStore`: ``<prefix>secrets/<app>/<NAME>`` keys, used by a mesh member.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from mycelium.home import Home

from .errors import SecretsError
from .key import SecretKey
from .names import check_app, check_name, check_value

__all__ = [
    "EtcdSecretStore",
    "HomeStore",
    "KeyValueClient",
    "Sealed",
    "SecretStore",
    "SecretValues",
    "Secrets",
    "check_app",
]


class SecretValues(dict[str, bytes]):
    """An app's opened secrets by name; its ``repr`` shows the names only (a REPL, a log line
    or a traceback that prints it shows no value)."""

    def __repr__(self) -> str:
        return "SecretValues(" + ", ".join(f"{n}=<hidden>" for n in sorted(self)) + ")"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Sealed:
    """One stored secret: its ciphertext (never shown in a repr) and when it was set."""

    box: bytes = field(repr=False)
    updated_at: float


class SecretStore(Protocol):
    """Sealed secrets by app and name."""

    def entries(self, app: str) -> dict[str, Sealed]:
        """Every secret of ``app`` (empty if none)."""

    def put(self, app: str, name: str, sealed: Sealed) -> None:
        """Store (or replace) one sealed secret."""

    def delete(self, app: str, name: str) -> bool:
        """Remove one secret; False if there was none."""


def _encode(sealed: Sealed) -> dict[str, Any]:
    return {"box": base64.b64encode(sealed.box).decode(), "updated_at": sealed.updated_at}


def _decode(data: Any, where: str) -> Sealed:
    try:
        return Sealed(base64.b64decode(data["box"], validate=True), float(data["updated_at"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SecretsError(f"corrupt secret entry {where}: {type(exc).__name__}") from None


class HomeStore:
    """The home's store of sealed secrets (one JSON file per app).

    Args:
        home: The mesh home.
    """

    def __init__(self, home: Home) -> None:
        self.dir = home.state / "secrets"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _file(self, app: str) -> Path:
        return self.dir / f"{check_app(app)}.json"

    def entries(self, app: str) -> dict[str, Sealed]:
        """Every secret of ``app``.

        Raises:
            SecretsError: the file is unreadable or corrupt.
        """
        path = self._file(app)
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SecretsError(f"cannot read the secrets of {app} ({path}): "
                               f"{type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise SecretsError(f"corrupt secrets file {path}")
        return {name: _decode(entry, f"{app}/{name}") for name, entry in data.items()}

    def _write(self, app: str, entries: dict[str, Sealed]) -> None:
        path = self._file(app)
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, orjson.dumps({n: _encode(s) for n, s in sorted(entries.items())}))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def put(self, app: str, name: str, sealed: Sealed) -> None:
        """Store one sealed secret (atomically: readers see the old file or the new one)."""
        with self._locked():
            entries = self.entries(app)
            entries[name] = sealed
            self._write(app, entries)

    def delete(self, app: str, name: str) -> bool:
        """Remove one secret; False if there was none."""
        with self._locked():
            entries = self.entries(app)
            if entries.pop(name, None) is None:
                return False
            self._write(app, entries)
            return True


class KeyValueClient(Protocol):
    """The three calls of :class:`mycelium.fabric.etcd_client.EtcdClient` this store uses."""

    def get_prefix(self, prefix: str) -> tuple[list[Any], int]:
        """Every key under ``prefix`` (objects with ``key`` and ``value``) and the revision."""

    def put(self, key: str, value: bytes, lease: int = 0) -> None:
        """Write one key."""

    def delete(self, key: str) -> None:
        """Delete one key."""


class EtcdSecretStore:
    """Sealed secrets in etcd: ``<prefix>secrets/<app>/<NAME>`` → ``{box, updated_at}``.

    Args:
        client: The member's etcd client.
        prefix: The mesh's key prefix (``/mycelium/``).
    """

    def __init__(self, client: KeyValueClient, prefix: str = "/mycelium/") -> None:
        self._client = client
        self._prefix = f"{prefix}secrets/"

    def entries(self, app: str) -> dict[str, Sealed]:
        """Every secret of ``app``.

        Raises:
            EtcdUnavailable: etcd did not answer.
        """
        base = f"{self._prefix}{check_app(app)}/"
        kvs, _rev = self._client.get_prefix(base)
        out = {}
        for kv in kvs:
            name = kv.key[len(base):]
            out[name] = _decode(orjson.loads(kv.value), f"{app}/{name}")
        return out

    def put(self, app: str, name: str, sealed: Sealed) -> None:
        """Store one sealed secret."""
        self._client.put(f"{self._prefix}{check_app(app)}/{name}", orjson.dumps(_encode(sealed)))

    def delete(self, app: str, name: str) -> bool:
        """Remove one secret; False if there was none."""
        if name not in self.entries(app):
            return False
        self._client.delete(f"{self._prefix}{check_app(app)}/{name}")
        return True


class Secrets:
    """Set, list, remove and open an app's secrets: the one place that seals and opens.

    Args:
        store: Where the sealed values live.
        key: Loads the home's secrets key (``create=True`` when a value is about to be sealed).
        clock: The time source of ``updated_at``.
    """

    def __init__(self, store: SecretStore, key: Callable[[bool], SecretKey],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._key = key
        self._clock = clock

    def set(self, app: str, name: str, value: bytes) -> None:
        """Seal and store one value (checked first: nothing changes on bad input).

        Raises:
            BadSecret: a bad app name, secret name or value.
        """
        check_app(app)
        check_name(name)
        check_value(value)
        box = self._key(True).seal(app, name, value)
        self.store.put(app, name, Sealed(box, self._clock()))

    def remove(self, app: str, name: str) -> bool:
        """Remove one secret; False if there was none.

        Raises:
            BadSecret: a bad app or secret name.
        """
        return self.store.delete(check_app(app), check_name(name))

    def list(self, app: str) -> list[tuple[str, float]]:
        """``(name, updated_at)`` of every secret of ``app``, by name: never a value."""
        return sorted((n, s.updated_at) for n, s in self.store.entries(check_app(app)).items())

    def values(self, app: str) -> SecretValues:
        """Every secret of ``app``, opened (for the instance being spawned, nothing else).

        Raises:
            SecretKeyError: the app has secrets but this home has no key.
            SecretsUnreadable: a value does not open with this home's key.
        """
        entries = self.store.entries(check_app(app))
        if not entries:
            return SecretValues()
        key = self._key(False)
        return SecretValues({name: key.open(app, name, s.box) for name, s in entries.items()})
