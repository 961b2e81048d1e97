"""One member of a multi-machine mesh: ``mycelium up --fabric etcd://…`` (SPEC §9).

A :class:`Member` is the single-machine :class:`~mycelium.mesh.Mesh` with its state in etcd:

- before the tree starts (after the home lock, so a second ``up`` on a home cannot touch the
  running member's keys) it connects to etcd — an unreachable etcd is one clear error — takes
  its lease, cleans up what a previous life of this home left and claims its node names
  ``<prefix>-1 … <prefix>-N``;
- the fabric child is a :class:`~mycelium.fabric.cluster.ClusterFabric`; ``--no-edge`` leaves
  the edge out (a member that only runs workloads);
- it serves its spore repo read-only (:class:`~mycelium.spores.fetch.SporeServer`) on its
  advertise host and fetches digests it lacks from the other members, verified against this
  home's own trusted keys;
- on shutdown it revokes its lease, so its nodes and endpoints leave the mesh at once.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

from mycelium._logger import get_logger
from mycelium.errors import BadInput, OperationFailed
from mycelium.fabric.cluster import ClusterFabric
from mycelium.fabric.etcd import DEFAULT_TTL, EtcdStore, EtcdUnavailable, MemberConflict, connect
from mycelium.fabric.validate import DIGEST
from mycelium.home import Home
from mycelium.mesh import Mesh
from mycelium.node.settings import SporeInfo
from mycelium.operator import MeshConfig
from mycelium.operator.control import ControlError
from mycelium.spores import load_trusted
from mycelium.spores.fetch import SporeServer, fetch
from supervisors import ChildSpec

__all__ = ["Member", "default_prefix"]

log = get_logger(__name__)

_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")


def default_prefix() -> str:
    """The host name, lower-cased, with anything but ``[a-z0-9-]`` turned into ``-``."""
    name = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().split(".")[0].lower()).strip("-")
    return name[:40] or "member"


class Member(Mesh):
    """A mesh member whose control-plane state lives in etcd.

    Args:
        home: The member's home (its own keys, trust, repo, logs).
        config: The loaded configuration.
        nodes: How many node agents this member runs.
        edge_host: Where the edge listens.
        edge_port: The edge's port (0: any free port).
        fabric: ``etcd://HOST:PORT[,HOST:PORT…]``.
        node_prefix: Node names are ``<prefix>-N`` (default: the host name).
        advertise_host: The address other members use to reach this one.
        edge: False for ``--no-edge``.
        ttl: The member lease's TTL in seconds.
        out: Receives each human-readable line.

    Raises:
        BadInput: a bad prefix, TTL or etcd address.
    """

    def __init__(self, home: Home, config: MeshConfig, nodes: int, edge_host: str,
                 edge_port: int, *, fabric: str, node_prefix: str | None = None,
                 advertise_host: str | None = None, edge: bool = True,
                 ttl: float = DEFAULT_TTL, out: Callable[[str], None] = print) -> None:
        super().__init__(home, config, nodes, edge_host, edge_port, out=out)
        prefix = node_prefix or default_prefix()
        if not _PREFIX_RE.fullmatch(prefix):
            raise BadInput(f"bad --node-prefix {prefix!r}: lowercase letters, digits and '-', "
                           "at most 41 characters, starting with a letter or digit")
        if not 0.5 <= ttl <= 3600:
            raise BadInput(f"bad lease TTL {ttl!r}: between 0.5 and 3600 seconds")
        if not fabric.startswith("etcd://"):
            raise BadInput(f"bad --fabric {fabric!r}: expected etcd://HOST:PORT[,HOST:PORT…]")
        self.prefix = prefix
        self.fabric_url = fabric
        self.advertise_host = advertise_host or "127.0.0.1"
        self.with_edge = edge
        self.ttl = ttl
        self.node_names = tuple(f"{prefix}-{i}" for i in range(1, nodes + 1))
        self.store: EtcdStore | None = None
        self._fetching: set[str] = set()
        self._fetching_lock = threading.Lock()
        self.spores: SporeServer | None = None
        self.home_id = hashlib.sha256(
            f"{socket.gethostname()}:{home.root.resolve()}".encode()).hexdigest()[:16]

    # -- lifecycle -------------------------------------------------------------------------

    def _join(self) -> EtcdStore:
        try:
            store = connect(self.fabric_url, self.prefix, self.home_id, ttl=self.ttl)
        except ValueError as exc:
            raise BadInput(f"bad --fabric {self.fabric_url!r}: {exc}") from None
        except EtcdUnavailable as exc:
            raise OperationFailed(f"cannot reach the fabric at {self.fabric_url}: {exc}") from None
        self.spores = SporeServer(self.repo, self.advertise_host, 0).start()
        try:
            store.join(self.node_names, spore_url=self.spores.url)
        except (MemberConflict, EtcdUnavailable):
            store.close()
            raise
        store.on_event(self._etcd_event)
        self.store = store
        return store

    def _etcd_event(self, kind: str) -> None:
        text = {"etcd-lost": "etcd unreachable: workloads keep serving; retrying",
                "etcd-back": "etcd reachable again: state republished",
                "lease-renewed": "etcd lease had expired: registered again"}.get(kind, kind)
        self._out(f"fabric: {text} ({self.fabric_url})")

    def stop(self) -> None:
        """Graceful shutdown, then revoke the lease and stop serving spores (idempotent)."""
        super().stop()
        store, self.store = self.store, None
        if store is not None:
            store.close()
        spores, self.spores = self.spores, None
        if spores is not None:
            spores.stop()

    # -- the tree --------------------------------------------------------------------------

    def _children(self) -> list[ChildSpec]:
        store = self.store or self._join()
        names, nodes, repo, host = self.names, self.node_names, self.repo, self.advertise_host
        children = []
        for spec in super()._children():
            if spec.id == "fabric":
                spec = ChildSpec("fabric", lambda: ClusterFabric.start(
                    names, store, nodes, repo.has, host, self._prefetch))
            elif spec.id == "edge" and not self.with_edge:
                continue
            children.append(spec)
        return children

    # -- spores ----------------------------------------------------------------------------

    def _fetch(self, digest: str) -> None:
        if self.repo.has(digest) or self.store is None:
            return
        try:
            sources = self.store.spore_urls()
        except EtcdUnavailable as exc:
            raise OperationFailed(f"spore {digest[:12]} is not here and etcd is "
                                  f"unreachable: {exc}") from None
        fetch(self.repo, digest, sources, load_trusted(self.home), self.limits)

    def _prefetch(self, digest: str) -> None:
        """Fetch a planned digest in the background (at most one fetch per digest at a time)."""
        with self._fetching_lock:
            if digest in self._fetching or self.repo.has(digest):
                return
            self._fetching.add(digest)

        def run() -> None:
            try:
                self._fetch(digest)
            except Exception as exc:  # the agent's own fetch reports it if it is needed
                log.info("prefetching spore %s failed: %s", digest[:12], exc)
            finally:
                with self._fetching_lock:
                    self._fetching.discard(digest)

        threading.Thread(target=run, name=f"prefetch-{digest[:12]}", daemon=True).start()

    def _spore_info(self, digest: str) -> SporeInfo:
        self._fetch(digest)
        return super()._spore_info(digest)

    def _op_kill(self, req: dict[str, Any]) -> Any:
        """``kill`` signals only this member's workloads: a pid means nothing on another host.

        Raises:
            ControlError: the node is another member's (kill through that member), or no
                instance of the app runs here.
        """
        node = req.get("node")
        if node is not None and node not in self.node_names:
            raise ControlError(f"node {node} is not on this member ({self.prefix}): run "
                               f"`mycelium kill` through the member that runs it", 1)
        if node is None:
            app = str(req.get("app", ""))
            local = [i["node"] for a in self.status(app)["apps"] for i in a["instances"]
                     if i["node"] in self.node_names and i["pid"]
                     and i["state"] in ("Launching", "Ready")]
            if not local:
                raise ControlError(f"no running instance of {app} on this member "
                                   f"({self.prefix})", 1)
            pids: list[int] = []
            for n in sorted(set(local)):
                pids += super()._op_kill({**req, "node": n})
            return pids
        return super()._op_kill(req)

    def _op_deploy(self, req: dict[str, Any]) -> Any:
        digest = str(req.get("digest", ""))
        if DIGEST.fullmatch(digest):
            self._fetch(digest)
        return super()._op_deploy(req)
