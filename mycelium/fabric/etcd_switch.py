"""``[rollout] parallel`` across the members of a mesh: the switch holders of each app in etcd.

On one machine the fabric's mailbox serialises switch claims (:class:`~.switch.SwitchGate`).
Members each have their own fabric, so the holders live in one etcd key per app,
``<prefix>switches/<app>``: a JSON map node → lease expiry, changed only by a compare-and-swap
transaction on its previous value. Two members claiming at once both read the same map; etcd
lets one write land and the other re-reads and is judged again by the same pure
:func:`~.switch.grant`. A holder that never releases (its member died) loses the switch when
its lease expires, as on one machine; members' clocks must agree to within the lease.
"""

from __future__ import annotations

import orjson

from mycelium._logger import get_logger

from .etcd_client import EtcdClient
from .switch import grant

__all__ = ["EtcdSwitches"]

log = get_logger(__name__)

_ATTEMPTS = 8


class EtcdSwitches:
    """Switch holders shared by every member (a :class:`~.switch.Switches`).

    Args:
        client: The member's etcd client.
        prefix: The mesh's key prefix.
    """

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self._client = client
        self._prefix = prefix + "switches/"

    def _read(self, app: str) -> tuple[dict[str, float], bytes | None]:
        kv = self._client.get(self._prefix + app)
        if kv is None:
            return {}, None
        return {str(k): float(v) for k, v in orjson.loads(kv.value).items()}, kv.value

    def _swap(self, app: str, before: bytes | None, holders: dict[str, float]) -> bool:
        key = self._prefix + app
        compare = [EtcdClient.absent(key) if before is None else EtcdClient.value_is(key, before)]
        op = (EtcdClient.put_op(key, orjson.dumps(holders)) if holders
              else EtcdClient.delete_op(key))
        return bool(self._client.txn(compare, [op]).get("succeeded"))

    def claim(self, app: str, node: str, parallel: int, now: float, lease: float) -> bool:
        """Grant ``node`` the switch of ``app`` if fewer than ``parallel`` nodes mesh-wide
        hold it (refused if etcd keeps changing under it, or cannot be reached: ask again)."""
        for _ in range(_ATTEMPTS):
            try:
                holders, before = self._read(app)
                granted = grant(holders, node, parallel, now, lease)
                if not granted:
                    return False
                if self._swap(app, before, holders):
                    return True
            except Exception as exc:  # etcd away: refuse now, the node asks again shortly
                log.warning("fabric: switch claim of %s for %s failed: %s", app, node, exc)
                return False
        return False

    def release(self, app: str, node: str) -> None:
        """Drop ``node``'s switch of ``app`` (its lease expires anyway if this fails)."""
        for _ in range(_ATTEMPTS):
            try:
                holders, before = self._read(app)
                if node not in holders:
                    return
                del holders[node]
                if self._swap(app, before, holders):
                    return
            except Exception as exc:
                log.warning("fabric: switch release of %s for %s failed: %s", app, node, exc)
                return

    def forget(self, app: str) -> None:
        """The app was stopped: nobody switches it."""
        try:
            self._client.delete(self._prefix + app)
        except Exception as exc:
            log.warning("fabric: forgetting the switches of %s failed: %s", app, exc)

    def holders(self, app: str) -> list[str]:
        """The nodes switching ``app`` (sorted; expired leases included until next claim)."""
        return sorted(self._read(app)[0])
