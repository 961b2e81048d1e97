"""Which of an instance's secrets become environment variables, checked (pure).

Every secret of the app is a file ``$CREDENTIALS_DIRECTORY/NAME`` (0400, owned by the
workload's uid, in the instance's private ``credentials`` directory, removed when it stops):
the isolation of the instance writes them (:func:`mycelium.node.sandboxfs.write_credentials`).
The names the manifest (or the plan, from an apply file) lists in ``env_secrets`` are also
given as environment variables; this module decides those. Nothing here logs or raises with a
value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mycelium.errors import OperationFailed

__all__ = ["CredentialsError", "environment"]


class CredentialsError(OperationFailed):
    """The secrets cannot be given as asked (the launch fails with this reason; no value)."""


def environment(values: Mapping[str, bytes], env_secrets: Iterable[str] = ()) -> dict[str, str]:
    """The environment variables of ``env_secrets``, from the app's opened ``values``.

    Raises:
        CredentialsError: a name has no secret, or its value holds a NUL byte (it can only be a
            file).
    """
    names = tuple(env_secrets)
    missing = [n for n in names if n not in values]
    if missing:
        raise CredentialsError(f"env_secrets names secret(s) that are not set: "
                               f"{', '.join(missing)} (mycelium secret set APP NAME)")
    env: dict[str, str] = {}
    for name in names:
        if b"\0" in values[name]:
            raise CredentialsError(f"secret {name} holds a NUL byte: it cannot be an environment "
                                   "variable (read it from $CREDENTIALS_DIRECTORY instead)")
        env[name] = values[name].decode("utf-8", "surrogateescape")
    return env
