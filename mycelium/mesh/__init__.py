"""One running mesh: its lifecycle (:class:`Mesh`) and the parts it composes.

- :mod:`.lock`: the home lock (:class:`HomeLock`, :class:`MeshLocked`);
- :mod:`.logsink`: the supervision log writer and its fan-out (:class:`LogSink`);
- :mod:`.backend`: where the control-plane state lives (:class:`FabricBackend`,
  :class:`LocalFabric`; the multi-machine one is :class:`mycelium.member.Member`);
- :mod:`.sporesource`: the spores agents run (:class:`SporeSource`);
- :mod:`.tree`: the supervision tree's child specs (:class:`TreeBuilder`);
- :mod:`.ops`: the control socket's operations (:class:`ControlOps`);
- :mod:`.mesh`: the lifecycle that composes them (:class:`Mesh`).
"""

from mycelium.node.leftovers import reap_home

from .backend import FabricBackend, KillScope, LocalFabric
from .lock import HomeLock, MeshLocked
from .logsink import LogSink
from .mesh import Mesh
from .ops import ControlOps
from .sporesource import SporeSource
from .tree import TreeBuilder

__all__ = ["ControlOps", "FabricBackend", "HomeLock", "KillScope", "LocalFabric", "LogSink",
           "Mesh", "MeshLocked", "SporeSource", "TreeBuilder", "reap_home"]
