"""The ``mycelium`` command line: parses, calls, renders.

Every failure becomes ONE ``error: …`` line on stderr with exit code 1 (operation failed) or
2 (bad usage, bad input); a traceback only with ``--debug`` or ``MYCELIUM_DEBUG=1``.

:func:`main` first offers the command line to :mod:`.fast`, which serves the common, fully
valid shapes of ``status``, ``kill`` and ``stop`` with the standard library alone (Typer and
click cost ~100 ms of imports); anything else runs the Typer application in :mod:`.full`, so
both produce the same bytes and exit codes.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the documented exit codes (0, 1, 2)."""
    args = list(sys.argv[1:] if argv is None else argv)
    from .fast import run_fast

    rc = run_fast(args)
    if rc is not None:
        sys.exit(rc)
    from .full import run

    run(args)
