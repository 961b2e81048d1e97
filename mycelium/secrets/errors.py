"""The secrets package's exception tree (the CLI turns each into one ``error:`` line)."""

from __future__ import annotations

from mycelium.errors import BadInput, OperationFailed

__all__ = ["BadSecret", "SecretKeyError", "SecretsError", "SecretsUnreadable"]


class SecretsError(OperationFailed):
    """A secrets operation failed (exit 1). Messages name secrets, never their values."""


class BadSecret(BadInput):
    """A bad name, an empty or oversized value, a bad app name (exit 2, nothing changed)."""


class SecretKeyError(BadInput):
    """The secrets key is missing, unsafe, malformed or would be overwritten (exit 2)."""


class SecretsUnreadable(SecretsError):
    """A stored secret does not open under this home's key (another mesh's key, or tampered)."""
