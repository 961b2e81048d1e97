"""describe_tree: the live supervision tree as plain data (what ``mycelium tree`` shows).

It walks the tree from the caller's thread, asking each supervisor only for its own level,
so no supervisor blocks its mailbox waiting on another one.
"""

from __future__ import annotations

from typing import Any

import pykka

from supervisors.api import describe
from supervisors.errors import SupervisorError, SupervisorNotRunning
from supervisors.messages import ChildInfo

__all__ = ["describe_tree"]


def describe_tree(ref: pykka.ActorRef[Any], timeout: float = 5.0) -> dict[str, Any]:
    """Describe a supervisor and everything under it, recursively.

    Supervisors become ``{id, type: "supervisor", kind, path, strategy, intensity, period,
    status, restarts, ref, meta, children: [...]}``; workers ``{id, type: "worker", status,
    restarts, ref, meta}``. A child supervisor that dies while being walked shows its status
    from its parent's view and no children. The root's id is the last part of its path.

    Args:
        ref: The root supervisor's ref.
        timeout: Seconds to wait for each supervisor's answer.

    Returns:
        The nested description.

    Raises:
        SupervisorNotRunning: If the root supervisor is dead or does not answer.
        SupervisorError: If ``ref`` is not a supervisor.
    """
    root = _supervisor(ref, timeout)
    root.update(id=root["path"].rsplit("/", 1)[-1], status="running", restarts=0, meta={})
    return root


def _supervisor(ref: pykka.ActorRef[Any], timeout: float) -> dict[str, Any]:
    own = describe(ref, timeout)
    infos: list[ChildInfo] = own.pop("children")
    own.update(type="supervisor", ref=ref, children=[_child(info, timeout) for info in infos])
    return own


def _child(info: ChildInfo, timeout: float) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": info.id,
        "type": info.type,
        "status": info.status,
        "restarts": info.restarts,
        "ref": info.ref,
        "meta": dict(info.meta),
        "started_at": info.started_at,
    }
    if info.type != "supervisor":
        return node
    node["children"] = []
    if info.ref is not None:
        try:
            node.update(_supervisor(info.ref, timeout))
        except SupervisorNotRunning:
            node["status"] = "undefined"  # it died while the tree was being walked
        except SupervisorError:
            pass  # typed "supervisor" but not one: shown without children
    return node
