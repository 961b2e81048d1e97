"""The exception tree of desired-state files (``mycelium plan``/``apply``/``export``)."""

from __future__ import annotations

from mycelium.errors import BadInput, MyceliumError

__all__ = ["BadFile", "DesiredError"]


class DesiredError(MyceliumError):
    """Something about a desired-state file or its application failed."""


class BadFile(DesiredError, BadInput):
    """The file is not a valid desired state; nothing was changed (exit 2).

    The message names the file, the line where the file gives one, and the key:
    ``mesh.toml:7: apps.hello.min: must be an integer >= 0, got -1``.
    """

    exit_code = 2

    def __init__(self, path: str, line: int | None, key: str | None, reason: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")
        self.path = path
        self.line = line
        self.key = key
        self.reason = reason
