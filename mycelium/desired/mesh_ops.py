"""The mesh's side of ``plan``/``apply``/``export``: two control ops.

- ``desired``: every planned app with its plan (digest, generation, min, max, warmup, timeout,
  status), budget, the running spore's manifest — what a file is compared with — and the ids
  of its live instances (a rollout of the same spore is over once none of them is left).
- ``apply``: a batch of plans and stops, checked like ``deploy``'s (digest known and
  verified, the spore's ``name`` is the app), then sent to the fabric as ONE
  :class:`~mycelium.messages.PublishBatch`, applied all or nothing, and only if every app's
  plan is still at the generation the CLI computed its plan against.

The mesh registers them with ``DesiredOps(...).ops()`` beside its own ops; they run in the
control socket's connection threads, never in an actor.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mycelium.fabric.errors import BadPlan
from mycelium.fabric.validate import check_app_name
from mycelium.mesh.rollout_ops import canary_fields
from mycelium.messages import PlanVersion, PublishBatch, PublishPlan
from mycelium.states import InstanceState

if TYPE_CHECKING:  # the mesh passes its own in
    from mycelium.mesh.sporesource import SporeSource

__all__ = ["DesiredOps"]

_CACHE_MAX = 4096


class DesiredOps:
    """The ``desired`` and ``apply`` control ops of one mesh.

    Args:
        status: The mesh's status document (``ControlOps.status``).
        fabric: The fabric actor's ref, now (raises while it restarts).
        spores: Where digests are resolved (fetched by a member that lacks them) and verified.
        rollout_timeout: ``[rollout] timeout``: a plan's health deadline when it names none.
    """

    def __init__(self, status: Callable[[], dict[str, Any]], fabric: Callable[[], Any],
                 spores: SporeSource, rollout_timeout: float) -> None:
        self._status = status
        self._fabric = fabric
        self._spores = spores
        self._rollout_timeout = rollout_timeout
        self._manifests: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def ops(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """The ops by name, for the control socket."""
        return {"desired": self.desired, "apply": self.apply}

    # -- desired ---------------------------------------------------------------------------

    def desired(self, _req: dict[str, Any]) -> dict[str, Any]:
        """Every planned app (plan, budget, the signed manifest of its digest, its live
        instances' ids) and the mesh's defaults for what a file may leave out (``[rollout]
        timeout``)."""
        apps = []
        for doc in self._status()["apps"]:
            if doc.get("digest") is None:
                continue  # stopped: its instances are still draining
            keys = ("app", "digest", "generation", "min", "max", "warmup", "timeout", "budget",
                    "plan_status", "reason", "state", "ready", "env_secrets", "hosts")
            live = [i["id"] for i in doc.get("instances") or ()
                    if i["state"] != InstanceState.STOPPED]
            apps.append({key: doc.get(key) for key in keys}
                        | {"manifest": self._manifest(doc["digest"]), "instances": live})
        return {"apps": apps, "defaults": {"timeout": self._rollout_timeout}}

    def _manifest(self, digest: str) -> dict[str, Any] | None:
        """The spore's manifest, verified once per digest (a digest's content never changes)."""
        with self._lock:
            known = self._manifests.get(digest)
        if known is not None:
            return known
        try:
            data = self._spores.manifest(self._spores.resolve(digest)).to_dict(
                with_signature=False)
        except Exception:  # not here (yet): the CLI treats the app as another spore
            return None
        with self._lock:
            if len(self._manifests) >= _CACHE_MAX:
                self._manifests.clear()
            self._manifests[digest] = data
        return data

    # -- apply -----------------------------------------------------------------------------

    def apply(self, req: dict[str, Any]) -> Any:
        """Check every plan of the batch, then publish it as one all-or-nothing message.

        Raises:
            BadPlan: a plan is refused (exit 2); nothing was changed.
            PlanMoved: an app moved since the CLI read the mesh (exit 1); nothing was changed.
        """
        plans = tuple(self._plan(item) for item in req.get("plans") or ())
        stops = tuple(check_app_name(app) for app in req.get("stops") or ())
        expect = tuple(PlanVersion(check_app_name(app), int(gen))
                       for app, gen in sorted((req.get("expect") or {}).items()))
        return self._fabric().ask(PublishBatch(plans, stops, expect), timeout=60.0)

    def _plan(self, item: dict[str, Any]) -> PublishPlan:
        """One plan, checked as ``deploy`` checks its request (the same defaults)."""
        from mycelium.mesh.ops import deploy_plan

        app = check_app_name(item.get("app"))
        digest = self._spores.resolve(str(item.get("digest", "")))
        manifest = self._spores.manifest(digest)
        if manifest.name != app:
            raise BadPlan(f"spore {digest[:12]} is app {manifest.name!r}, not {app!r}")
        request = {**item, "rollout_timeout": item.get("timeout")}
        return dataclasses.replace(
            deploy_plan(request, digest, manifest.warmup, self._rollout_timeout),
            **canary_fields(item), who=str(item.get("who") or ""), version=manifest.version)
