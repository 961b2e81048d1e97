"""Secrets: values sealed at rest under the home's key, delivered to instances as files.

``mycelium secret set|list|rm`` and ``secret key export|import`` are the CLI's face
(docs/reference.md#secrets). A store (the home's, or etcd in a multi-machine mesh) holds only
ciphertext; :class:`Secrets` seals and opens; the node agent opens an app's values only when it
spawns an instance and writes them into the instance's credentials directory
(:mod:`mycelium.node.credentials`). Messages carry names and versions, never values.
"""

from __future__ import annotations

import importlib

from .errors import BadSecret, SecretKeyError, SecretsError, SecretsUnreadable
from .names import MAX_VALUE, NAME_RE, check_app, check_name, check_value
from .redact import redact

TYPE_CHECKING = False  # not typing's: the CLI's fast path imports this package
if TYPE_CHECKING:
    from typing import Any

    from .key import SecretKey, export_key, import_key, key_path, load_key
    from .store import EtcdSecretStore, HomeStore, Sealed, Secrets, SecretStore, SecretValues

__all__ = [
    "MAX_VALUE",
    "NAME_RE",
    "BadSecret",
    "EtcdSecretStore",
    "HomeStore",
    "Sealed",
    "SecretKey",
    "SecretKeyError",
    "SecretStore",
    "SecretValues",
    "Secrets",
    "SecretsError",
    "SecretsUnreadable",
    "check_app",
    "check_name",
    "check_value",
    "export_key",
    "home_secrets",
    "import_key",
    "key_path",
    "load_key",
    "redact",
]

_HOMES = {"SecretKey": "key", "export_key": "key", "import_key": "key", "key_path": "key",
          "load_key": "key", "EtcdSecretStore": "store", "HomeStore": "store",
          "Sealed": "store", "Secrets": "store", "SecretStore": "store",
          "SecretValues": "store"}
"""Where the sealing and storing names live: loaded on first use (PEP 562), so that what only
checks names (the CLI's fast ``secret set``) does not load PyNaCl and the home's store."""


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"mycelium.secrets.{module}"), name)


def home_secrets(home: object) -> Secrets:
    """The :class:`Secrets` of a home's own store and key (a single-machine mesh, or no mesh)."""
    from mycelium.home import Home

    from .key import load_key
    from .store import HomeStore, Secrets

    assert isinstance(home, Home)
    return Secrets(HomeStore(home), lambda create: load_key(home, create=create))
