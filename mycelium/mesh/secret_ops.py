"""The control socket's secret operations: ``secret_set``, ``secret_rm``, ``secret_list``.

A running mesh owns its secrets store (the home's, or etcd for a member), so ``mycelium
secret`` goes through the control socket whenever a mesh runs: the value is sealed here under
the home's key, stored, and the fabric is told :class:`~mycelium.messages.SecretsChanged` —
a new rollout generation of the app's digest, blue/green, whose instances open the new values
when they start. Requests carry the value base64-encoded; replies and errors never carry it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from mycelium.fabric import Names
from mycelium.messages import SecretsChanged
from mycelium.operator.control import ControlError
from mycelium.secrets import BadSecret, Secrets, check_app, check_name

__all__ = ["SecretOps"]

Op = Callable[[dict[str, Any]], Any]


class SecretOps:
    """The secret operations of one mesh.

    Args:
        names: The mesh's name registry (to reach the fabric).
        secrets: The mesh's secrets (its backend's store under the home's key).
    """

    def __init__(self, names: Names, secrets: Callable[[], Secrets]) -> None:
        self.names = names
        self.secrets = secrets

    def handlers(self) -> dict[str, Op]:
        """Op name → handler, merged into the control socket's table."""
        return {"secret_set": self.set, "secret_rm": self.remove, "secret_list": self.list}

    def set(self, req: dict[str, Any]) -> dict[str, Any]:
        """Seal and store one value, then roll the app out if it runs.

        Raises:
            BadSecret: a bad app, name or value (nothing stored).
        """
        app, name = check_app(req.get("app")), check_name(req.get("name"))
        raw = req.get("value_b64")
        if not isinstance(raw, str):
            raise BadSecret("secret_set: 'value_b64' must be the base64 of the value")
        try:
            value = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadSecret("secret_set: 'value_b64' is not valid base64") from None
        self.secrets().set(app, name, value)
        return {"app": app, "name": name, **self._roll(app)}

    def remove(self, req: dict[str, Any]) -> dict[str, Any]:
        """Remove one secret, then roll the app out if it runs.

        Raises:
            BadSecret: a bad app or name.
            ControlError: no such secret (exit 1).
        """
        app, name = check_app(req.get("app")), check_name(req.get("name"))
        if not self.secrets().remove(app, name):
            raise ControlError(f"app {app} has no secret {name}", 1)
        return {"app": app, "name": name, **self._roll(app)}

    def list(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        """``[{name, updated_at}]`` of an app's secrets (never a value)."""
        return [{"name": n, "updated_at": t} for n, t in self.secrets().list(check_app(
            req.get("app")))]

    def _roll(self, app: str) -> dict[str, Any]:
        fabric = self.names.get("fabric")
        if fabric is None:
            raise ControlError("the secret is stored, but the fabric is restarting: the app's "
                               "instances get it at their next start", 1)
        result = fabric.ask(SecretsChanged(app), timeout=10.0)
        return dict(result) if isinstance(result, dict) else {"rollout": False}
