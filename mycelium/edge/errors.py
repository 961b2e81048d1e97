"""The edge's exception tree.

The edge turns upstream trouble into HTTP status codes, never into exceptions; these exceptions
are for its owner (the mesh's edge actor) when the server itself cannot do what it was asked.
"""

from __future__ import annotations

from mycelium.errors import BadInput, OperationFailed

__all__ = ["EdgeConfigError", "EdgeError"]


class EdgeError(OperationFailed):
    """The edge server could not start, was used out of order, or failed to stop."""


class EdgeConfigError(BadInput):
    """An :class:`~mycelium.edge.config.EdgeConfig` value is out of range."""
