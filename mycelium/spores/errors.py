"""The spores package's exception tree.

Verification failures exit 1 (the operation failed); bad input — an input manifest, a key
name, a digest that is not in the repo — exits 2. Every message is the whole ``error:`` line,
so each one names the precise reason.
"""

from __future__ import annotations

from mycelium.errors import BadInput, OperationFailed

__all__ = ["KeyFileError", "ManifestError", "SporeError", "SporeInputError", "UnknownSpore"]


class SporeError(OperationFailed):
    """A spore failed verification, or the repo could not store or find it (exit 1)."""

    exit_code = 1


class ManifestError(SporeError):
    """A manifest is malformed.

    Exit 2 when the manifest is the user's input (``pack``/``publish``), exit 1 when it was
    found inside a spore being verified (``in_spore=True``): then the spore is what is bad.
    """

    exit_code = 2

    def __init__(self, message: str, *, in_spore: bool = False) -> None:
        super().__init__(message)
        self.in_spore = in_spore
        self.exit_code = 1 if in_spore else 2


class UnknownSpore(SporeError):
    """A digest or prefix names no spore in the repo, or several (bad input, exit 2)."""

    exit_code = 2


class KeyFileError(BadInput):
    """A signing key is missing, malformed, too widely readable, or would be overwritten."""

    exit_code = 2


class SporeInputError(BadInput):
    """An input to pack or publish is unusable: a missing binary, a file that is too large."""

    exit_code = 2
