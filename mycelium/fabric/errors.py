"""The fabric's exception tree."""

from __future__ import annotations

from mycelium.errors import BadInput, MyceliumError, OperationFailed

__all__ = ["BadPlan", "FabricError", "NotRunning"]


class FabricError(MyceliumError):
    """Something in the control plane failed."""


class BadPlan(FabricError, BadInput):
    """A plan or budget the fabric refuses, with the precise reason; nothing was changed."""

    exit_code = 2


class NotRunning(FabricError, OperationFailed):
    """The actor a request is for is not running (restarting, or the mesh is stopping)."""

    exit_code = 1
