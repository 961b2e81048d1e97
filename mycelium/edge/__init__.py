"""The edge: the mesh's HTTP/1.1 reverse proxy (see docs/reference.md).

``ANY /{app}/{rest…}`` is proxied to ``/{rest…}`` on the app's Ready endpoints, round-robin,
with bodies streamed both ways. The routing table is an immutable snapshot pushed by the mesh's
edge actor; the server runs on its own event loop thread.
"""

from __future__ import annotations

from mycelium.edge.config import EdgeConfig
from mycelium.edge.errors import EdgeConfigError, EdgeError
from mycelium.edge.routes import APP_NAME, Endpoint, Route, RouteTable, split_target
from mycelium.edge.server import EdgeServer

__all__ = [
    "APP_NAME",
    "EdgeConfig",
    "EdgeConfigError",
    "EdgeError",
    "EdgeServer",
    "Endpoint",
    "Route",
    "RouteTable",
    "split_target",
]
