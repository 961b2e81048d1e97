"""One member of a multi-machine mesh: ``mycelium up --fabric etcd://…``.

A :class:`Member` is the :class:`~mycelium.mesh.backend.FabricBackend` that makes a
:class:`~mycelium.mesh.Mesh` one member of a mesh spread over several machines; the tree, the
log, the control operations and the lifecycle are the single-machine mesh's. The member:

- before the tree starts (after the home lock, so a second ``up`` on a home cannot touch the
  running member's keys) connects to etcd — an unreachable etcd is one clear error — takes its
  lease, cleans up what a previous life of this home left and claims its node names
  ``<prefix>-1 … <prefix>-N``;
- supplies the fabric with its etcd parts
  (:func:`~mycelium.fabric.cluster.start_cluster_fabric`) as the fabric child (with the same
  ``[rollout] parallel`` as on one machine); ``--no-edge`` leaves the edge out;
- serves its spore repo read-only (:class:`~mycelium.spores.fetch.SporeServer`) on its
  advertise host and fetches digests it lacks from the other members, verified against this
  home's own trusted keys;
- lets ``kill`` signal only its own nodes' workloads (a pid means nothing on another host);
- on shutdown revokes its lease, so its nodes and endpoints leave the mesh at once.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Callable

from mycelium._logger import get_logger
from mycelium.errors import BadInput, OperationFailed
from mycelium.fabric import Names
from mycelium.fabric.access import FabricAccess, fabric_access
from mycelium.fabric.cluster import start_cluster_fabric
from mycelium.fabric.etcd import DEFAULT_TTL, EtcdStore, EtcdUnavailable, MemberConflict, connect
from mycelium.fabric.etcd_client import EtcdAuthFailed
from mycelium.fabric.history import DEFAULT_KEEP
from mycelium.fabric.scaling import SCALE_DOWN_AFTER
from mycelium.home import Home
from mycelium.mesh import KillScope
from mycelium.secrets import EtcdSecretStore, SecretStore
from mycelium.spores import Limits, Repo, load_trusted
from mycelium.spores.fetch import SporeServer, fetch
from supervisors import ChildSpec
from supervisors.reports import Reporter

__all__ = ["Member", "cluster_fabric_child", "default_prefix"]

log = get_logger(__name__)

_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")


def default_prefix() -> str:
    """The host name, lower-cased, with anything but ``[a-z0-9-]`` turned into ``-``."""
    name = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().split(".")[0].lower()).strip("-")
    return name[:40] or "member"


def cluster_fabric_child(names: Names, store: EtcdStore, nodes: tuple[str, ...], repo: Repo,
                         advertise_host: str, prefetch: Callable[[str], None],
                         parallel: int, history_keep: int = DEFAULT_KEEP,
                         down_after: float = SCALE_DOWN_AFTER) -> ChildSpec:
    """The member's ``fabric`` child: the fabric with its etcd parts (the one place that
    assembles them)."""
    return ChildSpec("fabric", lambda: start_cluster_fabric(
        names, store, nodes, repo.has, parallel=parallel, advertise_host=advertise_host,
        prefetch=prefetch, history_keep=history_keep, down_after=down_after))


class Member:
    """The etcd backend of a mesh member.

    Args:
        home: The member's home (its own keys, trust, repo, logs).
        limits: Size limits for the spores it fetches.
        nodes: How many node agents this member runs.
        fabric: ``etcd://HOST:PORT[,HOST:PORT…]`` or ``etcds://…`` (TLS).
        node_prefix: Node names are ``<prefix>-N`` (default: the host name).
        advertise_host: The address other members use to reach this one.
        edge: False for ``--no-edge``.
        ttl: The member lease's TTL in seconds.
        access: TLS and credentials for etcd (:func:`~mycelium.fabric.access.fabric_access`);
            None: ``fabric`` checked with no credentials and no ``--insecure-fabric``.

    Raises:
        BadInput: a bad prefix, TTL or etcd address; plain etcd:// to another machine.
    """

    def __init__(self, home: Home, limits: Limits, nodes: int, *, fabric: str,
                 node_prefix: str | None = None, advertise_host: str | None = None,
                 edge: bool = True, ttl: float = DEFAULT_TTL,
                 access: FabricAccess | None = None) -> None:
        prefix = node_prefix or default_prefix()
        if not _PREFIX_RE.fullmatch(prefix):
            raise BadInput(f"bad --node-prefix {prefix!r}: lowercase letters, digits and '-', "
                           "at most 41 characters, starting with a letter or digit")
        if not 0.5 <= ttl <= 3600:
            raise BadInput(f"bad lease TTL {ttl!r}: between 0.5 and 3600 seconds")
        self.access = access if access is not None else fabric_access(fabric)
        self.home = home
        self.limits = limits
        self.prefix = prefix
        self.fabric_url = fabric
        self.advertise_host = advertise_host or "127.0.0.1"
        self.ttl = ttl
        self.home_id = hashlib.sha256(
            f"{socket.gethostname()}:{home.root.resolve()}".encode()).hexdigest()[:16]
        self.store: EtcdStore | None = None
        self.spores: SporeServer | None = None
        self._nodes = tuple(f"{prefix}-{i}" for i in range(1, nodes + 1))
        self._edge = edge
        self._repo = Repo(home.repo)
        self._out: Callable[[str], None] = print
        self._fetching: set[str] = set()
        self._fetching_lock = threading.Lock()

    @property
    def node_names(self) -> tuple[str, ...]:
        """``<prefix>-1`` … ``<prefix>-N``."""
        return self._nodes

    @property
    def with_edge(self) -> bool:
        """False for ``--no-edge`` (a member that only runs workloads)."""
        return self._edge

    @property
    def kill_scope(self) -> KillScope:
        """Only this member's nodes."""
        return KillScope(frozenset(self._nodes), self.prefix)

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, repo: Repo, out: Callable[[str], None]) -> None:
        """Connect to etcd, serve our spores, take the lease and claim our node names.

        Raises:
            BadInput: a malformed etcd address, or etcd refused the user or password.
            OperationFailed: etcd is unreachable, or another home holds our node names.
        """
        self._repo, self._out = repo, out
        try:
            store = connect(self.fabric_url, self.prefix, self.home_id, ttl=self.ttl,
                            tls=self.access.tls, user=self.access.user,
                            password=self.access.password)
        except ValueError as exc:
            raise BadInput(f"bad --fabric {self.fabric_url!r}: {exc}") from None
        except EtcdAuthFailed as exc:
            raise BadInput(str(exc)) from None
        except EtcdUnavailable as exc:
            raise OperationFailed(f"cannot reach the fabric at {self.fabric_url}: {exc}") from None
        self.spores = SporeServer(repo, self.advertise_host, 0).start()
        try:
            store.join(self._nodes, spore_url=self.spores.url)
        except (MemberConflict, EtcdUnavailable):
            store.close()
            raise
        store.on_event(self._etcd_event)
        self.store = store

    def _etcd_event(self, kind: str) -> None:
        text = {"etcd-lost": "etcd unreachable: workloads keep serving; retrying",
                "etcd-back": "etcd reachable again: state republished",
                "lease-renewed": "etcd lease had expired: registered again"}.get(kind, kind)
        self._out(f"fabric: {text} ({self.fabric_url})")

    def close(self) -> None:
        """Revoke the lease and stop serving spores (idempotent)."""
        store, self.store = self.store, None
        if store is not None:
            store.close()
        spores, self.spores = self.spores, None
        if spores is not None:
            spores.stop()

    def fabric_child(self, names: Names, repo: Repo, parallel: int, *,
                     history_keep: int = DEFAULT_KEEP, down_after: float = SCALE_DOWN_AFTER,
                     report: Reporter | None = None) -> ChildSpec:
        """The fabric with its etcd parts, on the etcd store joined by :meth:`open`."""
        if self.store is None:
            raise OperationFailed("the member has not joined the fabric")
        return cluster_fabric_child(names, self.store, self._nodes, repo, self.advertise_host,
                                    self.prefetch, parallel, history_keep, down_after)

    def secret_store(self) -> SecretStore:
        """The mesh's secrets in etcd (ciphertext only; every member opens them with its own
        copy of the secrets key).

        Raises:
            OperationFailed: the member has not joined etcd yet.
        """
        if self.store is None:
            raise OperationFailed("the member has not joined the fabric")
        return EtcdSecretStore(self.store.client, self.store.prefix)

    # -- spores ----------------------------------------------------------------------------

    def fetch(self, digest: str) -> None:
        """Fetch ``digest`` from the other members unless it is here already.

        Raises:
            OperationFailed: etcd is unreachable, or no member serves a valid copy.
        """
        if self._repo.has(digest) or self.store is None:
            return
        try:
            sources = self.store.spore_urls()
        except EtcdUnavailable as exc:
            raise OperationFailed(f"spore {digest[:12]} is not here and etcd is "
                                  f"unreachable: {exc}") from None
        fetch(self._repo, digest, sources, load_trusted(self.home), self.limits)

    def prefetch(self, digest: str) -> None:
        """Fetch a planned digest in the background (at most one fetch per digest at a time)."""
        with self._fetching_lock:
            if digest in self._fetching or self._repo.has(digest):
                return
            self._fetching.add(digest)

        def run() -> None:
            try:
                self.fetch(digest)
            except Exception as exc:  # the agent's own fetch reports it if it is needed
                log.info("prefetching spore %s failed: %s", digest[:12], exc)
            finally:
                with self._fetching_lock:
                    self._fetching.discard(digest)

        threading.Thread(target=run, name=f"prefetch-{digest[:12]}", daemon=True).start()
