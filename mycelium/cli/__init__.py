"""The ``mycelium`` command line: parses, calls, renders.

Every failure becomes ONE ``error: …`` line on stderr with exit code 1 (operation failed) or
2 (bad usage, bad input); a traceback only with ``--debug`` or ``MYCELIUM_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys

import click
import typer

from mycelium.errors import MyceliumError

from . import mesh_cmds, spore_cmds  # noqa: F401  (registers the commands on `app`)
from .app import app

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with SPEC §3's exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
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
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        if debug:
            raise
        _fail(exc.format_message(), 2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # the last line of defence: one readable line, never a traceback
        if debug:
            raise
        _fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _fail(message: str, code: int) -> None:
    first = " ".join(message.strip().splitlines()) or "failed"
    sys.stderr.write(f"error: {first}\n")
    sys.stderr.flush()
    sys.exit(code)
