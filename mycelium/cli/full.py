"""The full ``mycelium`` command line: the Typer application and its error handling.

Every failure becomes ONE ``error: …`` line on stderr with exit code 1 (operation failed) or
2 (bad usage, bad input); a traceback only with ``--debug`` or ``MYCELIUM_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys

import typer

try:  # typer >= 0.27 vendors click as typer._click; older releases use click itself
    from typer._click import exceptions as _clickexc
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as _clickexc  # type: ignore[no-redef]

from mycelium.errors import MyceliumError

from . import (  # noqa: F401  (registers the commands on `app`)
    desired_cmds,
    history_cmds,
    mesh_cmds,
    node_cmds,
    output_cmds,
    secret_cmds,
    spore_cmds,
)
from .app import app
from .lines import fail as _fail

__all__ = ["app", "run"]


def run(argv: list[str]) -> None:
    """Run the Typer CLI on ``argv`` and exit with the documented exit codes (0, 1, 2)."""
    args = list(argv)
    debug = os.environ.get("MYCELIUM_DEBUG") == "1"
    if "--debug" in args:
        args.remove("--debug")
        debug = True
    command = typer.main.get_command(app)
    try:
        rc = command.main(args, prog_name="mycelium", standalone_mode=False)
    except MyceliumError as exc:
        if debug:
            raise
        _fail(str(exc), exc.exit_code)
    except _clickexc.NoArgsIsHelpError as exc:
        sys.stderr.write((exc.ctx.get_help() if exc.ctx else "") + "\n")
        sys.exit(2)
    except _clickexc.UsageError as exc:
        if debug:
            raise
        _fail(exc.format_message(), 2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # the last line of defence: one readable line, never a traceback
        if debug:
            raise
        _fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
    sys.exit(rc if isinstance(rc, int) else 0)

