"""The control socket's rollout operations: a deploy's canary fields, promote, history,
rollback.

What a request's canary fields mean is a pure function (:func:`canary_fields`), checked before
anything reaches the fabric; the three operations each send one message to the fabric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pykka

from mycelium.fabric.errors import BadPlan
from mycelium.fabric.validate import check_app_name
from mycelium.rollout_messages import GetHistory, Promote, Rollback

__all__ = ["canary_fields", "rollout_handlers"]

Op = Callable[[dict[str, Any]], Any]


def _number(req: Mapping[str, Any], key: str, kind: type) -> Any:
    value = req.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind is int and not float(value).is_integer()) or not math.isfinite(value):
        raise BadPlan(f"--{key.replace('_', '-')} must be a number, not {value!r}")
    return kind(value)


def canary_fields(req: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~mycelium.messages.PublishPlan` canary fields a deploy request asks for.

    Raises:
        BadPlan: ``canary`` below 1, a weight outside 1 to 99 or without ``canary``, an
            ``auto_promote`` not above 0 or without ``canary``.
    """
    canary = _number(req, "canary", int)
    weight = _number(req, "canary_weight", int)
    promote = _number(req, "auto_promote", float)
    if canary is None:
        if weight is not None or promote is not None:
            raise BadPlan("--canary-weight and --auto-promote need --canary N")
        return {}
    if canary < 1:
        raise BadPlan(f"--canary must be at least 1, not {canary}")
    if weight is not None and not 1 <= weight <= 99:
        raise BadPlan(f"--canary-weight must be 1 to 99 (percent), not {weight}")
    if promote is not None and promote <= 0:
        raise BadPlan(f"--auto-promote must be above 0 seconds, not {promote:g}")
    return {"canary": canary, "canary_weight": weight or 0, "auto_promote": promote or 0.0}


def rollout_handlers(fabric: Callable[[], pykka.ActorRef[Any]]) -> dict[str, Op]:
    """Op name → handler for ``promote``, ``history`` and ``rollback``."""

    def promote(req: dict[str, Any]) -> Any:
        return fabric().ask(Promote(check_app_name(req.get("app"))), timeout=10.0)

    def history(req: dict[str, Any]) -> Any:
        return fabric().ask(GetHistory(check_app_name(req.get("app"))), timeout=10.0)

    def rollback(req: dict[str, Any]) -> Any:
        to = req.get("to") or ""
        if not isinstance(to, str):
            raise BadPlan(f"--to must be a generation or a digest, not {to!r}")
        return fabric().ask(Rollback(check_app_name(req.get("app")), to.strip(),
                                     str(req.get("who") or "")), timeout=10.0)

    return {"promote": promote, "history": history, "rollback": rollback}
