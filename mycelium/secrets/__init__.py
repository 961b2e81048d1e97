"""Secrets: values sealed at rest under the home's key, delivered to instances as files.

``mycelium secret set|list|rm`` and ``secret key export|import`` are the CLI's face
(docs/reference.md#secrets). A store (the home's, or etcd in a multi-machine mesh) holds only
ciphertext; :class:`Secrets` seals and opens; the node agent opens an app's values only when it
spawns an instance and writes them into the instance's credentials directory
(:mod:`mycelium.node.credentials`). Messages carry names and versions, never values.
"""

from __future__ import annotations

from .errors import BadSecret, SecretKeyError, SecretsError, SecretsUnreadable
from .key import SecretKey, export_key, import_key, key_path, load_key
from .names import MAX_VALUE, NAME_RE, check_name, check_value
from .redact import redact
from .store import (
    EtcdSecretStore,
    HomeStore,
    Sealed,
    Secrets,
    SecretStore,
    SecretValues,
    check_app,
)

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


def home_secrets(home: object) -> Secrets:
    """The :class:`Secrets` of a home's own store and key (a single-machine mesh, or no mesh)."""
    from mycelium.home import Home

    assert isinstance(home, Home)
    return Secrets(HomeStore(home), lambda create: load_key(home, create=create))
