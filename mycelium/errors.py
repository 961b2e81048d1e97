"""The root of every exception tree in mycelium.

Each package defines its own small tree under :class:`MyceliumError`; the CLI turns any of them
into one ``error: …`` line and the exception's ``exit_code``.
"""

from __future__ import annotations

__all__ = ["BadInput", "MyceliumError", "OperationFailed"]


class MyceliumError(Exception):
    """A failure an operator can read: the message is the whole ``error:`` line.

    Attributes:
        exit_code: The CLI's exit code for this failure (1 failed, 2 bad input).
    """

    exit_code: int = 1


class OperationFailed(MyceliumError):
    """The operation was valid but failed (verification, rollout, timeout, no mesh)."""

    exit_code = 1


class BadInput(MyceliumError):
    """The request itself is wrong: bad usage or bad input. Nothing was changed."""

    exit_code = 2
