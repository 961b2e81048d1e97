"""Sending a secret change to a running mesh and following the rollout it starts.

Standard library only: both ``mycelium secret set|rm`` of the Typer application
(:mod:`.secret_cmds`) and the fast path's ``secret set`` (:mod:`.fast`) use it, through a
``request(op, **fields)`` callable on the mesh's control socket.
"""

from __future__ import annotations

import base64
import time

from mycelium.errors import OperationFailed

from .lines import out

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on every CLI start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Request = Callable[..., Any]

__all__ = ["app_doc", "follow", "instance_ids", "send_set"]


def send_set(request: Request, name_app: str, name: str, value: bytes, before: set[str],
             wait: bool, timeout: float) -> None:
    """Have the mesh seal and store ``value`` as ``name`` of ``name_app``; with ``wait``,
    return once the rollout it starts replaced every old instance (those of ``before``, see
    :func:`instance_ids`).

    Raises:
        OperationFailed: the rollout failed or did not finish within ``timeout``.
    """
    result = request("secret_set", app=name_app, name=name,
                     value_b64=base64.b64encode(value).decode())
    follow(request, name_app, f"secret {name} of {name_app} set", result, before, wait, timeout)


def instance_ids(request: Request, name_app: str) -> set[str]:
    """The ids of the app's instances now (none if it is not deployed)."""
    doc = app_doc(request, name_app)
    return set() if doc is None else {i["id"] for i in doc["instances"]}


def app_doc(request: Request, name_app: str) -> dict[str, Any] | None:
    """The app's ``status --json`` object, or None."""
    for doc in request("status", app=name_app)["apps"]:
        if doc["app"] == name_app:
            return dict(doc)
    return None


def follow(request: Request, name_app: str, what: str, result: dict[str, Any],
           before: set[str], wait: bool, timeout: float) -> None:
    """Say what happened; with ``wait``, follow the rollout until no old instance is left.

    Raises:
        OperationFailed: the rollout failed or did not finish within ``timeout``.
    """
    if not result.get("rollout"):
        out(f"{what} (the app is not deployed: its instances get it when they start)")
        return
    generation = int(result["generation"])
    if not wait:
        out(f"{what}: rolling out (generation {generation}, not waiting)")
        return
    started = time.monotonic()
    while True:
        doc = app_doc(request, name_app)
        if doc is None:
            raise OperationFailed(f"{what}, but the app was stopped during its rollout")
        if doc.get("generation", 0) > generation and doc.get("plan_status") == "failed":
            raise OperationFailed(f"{what}, but its rollout failed: {doc.get('reason')}")
        live = [i for i in doc["instances"] if i["state"] != "Stopped"]
        old = [i for i in live if i["id"] in before]
        ready = sum(1 for i in live if i["id"] not in before and i["state"] == "Ready")
        if not old and ready >= max(doc["min"], 1 if doc["desired"] else 0):
            out(f"{what}: {ready}/{doc['desired']} instances replaced in "
                f"{time.monotonic() - started:.2f}s")
            return
        if time.monotonic() - started > timeout:
            raise OperationFailed(f"{what}, but its rollout did not finish within {timeout:g}s "
                                  f"({ready} new Ready, {len(old)} old left)")
        time.sleep(0.02)
