"""The CLI's three ways to write a line: a result, a progress note, the one ``error:`` line.

Standard library only: both the Typer application and the fast path (:mod:`.fast`) use them.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on every CLI start
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["err", "fail", "out"]


def out(text: str) -> None:
    """Write one line to stdout now (progress must not wait for a buffer to fill)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
    """Write one line to stderr now."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def fail(message: str, code: int) -> NoReturn:
    """Exit with ``code`` after ONE ``error: …`` line on stderr (docs/reference.md#exit-codes)."""
    first = " ".join(message.strip().splitlines()) or "failed"
    sys.stderr.write(f"error: {first}\n")
    sys.stderr.flush()
    sys.exit(code)
