"""Where a mesh keeps its control-plane state, and what that decides.

A :class:`~mycelium.mesh.Mesh` is the same tree on one machine and as a member of a
multi-machine mesh; what differs is composed in as a :class:`FabricBackend`:

- the fabric child (the same :class:`~mycelium.fabric.Fabric`, with its SQLite store, or with
  its etcd parts from :func:`~mycelium.fabric.cluster.start_cluster_fabric`), built by
  :meth:`FabricBackend.fabric_child` with the same rollout parallelism either way;
- the node names (``node-N``, or ``<prefix>-N``) and whether an edge runs;
- where a spore the local repo lacks comes from (nowhere, or the other members);
- which nodes' workloads ``kill`` may signal (a pid means nothing on another host);
- the steps around the tree (join etcd and serve spores before it, revoke the lease after it).

:class:`LocalFabric` is the single-machine backend; :class:`mycelium.member.Member` the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mycelium.fabric import Fabric, Names, SqliteStore
from mycelium.fabric.history import DEFAULT_KEEP
from mycelium.fabric.history_store import HistoryLog, SqliteHistory
from mycelium.fabric.rollouts import Rollouts
from mycelium.fabric.scaler import DrainBook, FileDrains
from mycelium.fabric.scaling import SCALE_DOWN_AFTER
from mycelium.home import Home
from mycelium.secrets import HomeStore, SecretStore
from mycelium.spores import Repo
from supervisors import ChildSpec
from supervisors.reports import Reporter

__all__ = ["FabricBackend", "KillScope", "LocalFabric", "local_fabric_child"]


@dataclass(frozen=True, slots=True)
class KillScope:
    """Which nodes' workloads this process may signal.

    Attributes:
        nodes: The nodes whose pids are ours; None: every node of the mesh.
        member: How error messages name this part of the mesh (e.g. ``this member (a)``).
    """

    nodes: frozenset[str] | None = None
    member: str | None = None


class FabricBackend(Protocol):
    """What a mesh's control-plane store decides (see the module docstring)."""

    @property
    def node_names(self) -> tuple[str, ...]:
        """The node agents this process runs, in start order."""

    @property
    def with_edge(self) -> bool:
        """Whether this process runs an edge."""

    @property
    def kill_scope(self) -> KillScope:
        """Which workloads ``kill`` may signal."""

    def open(self, repo: Repo, out: Callable[[str], None]) -> None:
        """Steps before the tree starts (the home is locked by then).

        Args:
            repo: The home's spore repo (to serve to, or fetch into).
            out: Where human-readable notes go (the supervision log's stream).
        """

    def close(self) -> None:
        """Steps after the tree stopped (idempotent)."""

    def fabric_child(self, names: Names, repo: Repo, parallel: int, *,
                     history_keep: int = DEFAULT_KEEP, down_after: float = SCALE_DOWN_AFTER,
                     report: Reporter | None = None) -> ChildSpec:
        """The tree's ``fabric`` child.

        Args:
            names: The mesh's name registry.
            repo: The spore repo (a plan for a digest it lacks is refused, or fetched).
            parallel: Instances replaced at a time in a rollout (``[rollout] parallel``).
            history_keep: Deployments kept per app (``[rollout] history_keep``).
            down_after: Seconds below target before an autoscaled app scales down
                (``[scale] down_after``).
            report: The supervision log's reporter (the fabric's scale events).
        """

    def fetch(self, digest: str) -> None:
        """Make ``digest`` present in the local repo if it can (no-op where it cannot).

        Raises:
            OperationFailed: it could not be fetched.
        """

    def secret_store(self) -> SecretStore:
        """Where the mesh's sealed secrets live (the home's store, or etcd).

        Raises:
            OperationFailed: the backend is not open (a member before it joined).
        """


def local_fabric_child(names: Names, store: Callable[[], SqliteStore], nodes: tuple[str, ...],
                       repo: Repo, parallel: int, history: Callable[[], HistoryLog] | None = None,
                       history_keep: int = DEFAULT_KEEP, drains: DrainBook | None = None,
                       report: Reporter | None = None,
                       down_after: float = SCALE_DOWN_AFTER) -> ChildSpec:
    """The single-machine ``fabric`` child (the one place that constructs a :class:`Fabric`)."""
    return ChildSpec("fabric", lambda: Fabric.start(
        names, store, nodes, repo.has, parallel=parallel,
        rollouts=Rollouts(history, history_keep), drains=drains, report=report,
        down_after=down_after))


class LocalFabric:
    """The single-machine backend: state in ``<home>/state/fabric.db``, nodes ``node-1…N``.

    Args:
        home: The mesh home.
        nodes: How many node agents.
    """

    def __init__(self, home: Home, nodes: int) -> None:
        self.db = home.state / "fabric.db"
        self._secrets = HomeStore(home)
        self._nodes = tuple(f"node-{i}" for i in range(1, nodes + 1))

    @property
    def node_names(self) -> tuple[str, ...]:
        """``node-1`` … ``node-N``."""
        return self._nodes

    @property
    def with_edge(self) -> bool:
        """A single machine always runs its edge."""
        return True

    @property
    def kill_scope(self) -> KillScope:
        """Every node is in this process."""
        return KillScope()

    def open(self, repo: Repo, out: Callable[[str], None]) -> None:
        """Nothing to join."""

    def close(self) -> None:
        """Nothing to leave."""

    def fabric_child(self, names: Names, repo: Repo, parallel: int, *,
                     history_keep: int = DEFAULT_KEEP, down_after: float = SCALE_DOWN_AFTER,
                     report: Reporter | None = None) -> ChildSpec:
        """A :class:`Fabric` on the home's SQLite store (its history in the same file, drained
        nodes in ``drained.json``)."""
        db = self.db
        return local_fabric_child(names, lambda: SqliteStore(db), self._nodes, repo, parallel,
                                  lambda: SqliteHistory(db), history_keep,
                                  FileDrains(db.parent / "drained.json"), report, down_after)

    def fetch(self, digest: str) -> None:
        """No other place has spores: a missing digest stays missing."""

    def secret_store(self) -> SecretStore:
        """The home's own store (``<home>/state/secrets``)."""
        return self._secrets
