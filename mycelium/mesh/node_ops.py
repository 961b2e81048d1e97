"""The control socket's ``node`` operation: drain a node, or open it again.

``node drain`` only starts the move (the fabric places replacements elsewhere and lets the
node's instances go once those are Ready); the CLI follows it in ``status``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pykka

from mycelium.messages import DrainNode
from mycelium.operator.control import ControlError

__all__ = ["node_handlers"]


def node_handlers(fabric: Callable[[], pykka.ActorRef[Any]]) -> dict[str, Callable[..., Any]]:
    """The ``node`` op for the control socket's table.

    Args:
        fabric: The fabric's current ref (raises ControlError while it restarts).
    """
    def node(req: dict[str, Any]) -> Any:
        action, name = req.get("action"), req.get("node")
        if action not in ("drain", "undrain") or not isinstance(name, str):
            raise ControlError("node: expected action drain|undrain and a node name", 2)
        return fabric().ask(DrainNode(name, undrain=action == "undrain"), timeout=10.0)

    return {"node": node}
