"""The Typer application object and the options every command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mycelium.home import Home, resolve_home

from .lines import err, out

__all__ = ["HomeOption", "app", "err", "home_of", "out"]

app = typer.Typer(
    name="mycelium",
    help=("Mycelium Mesh: signed workloads on an OTP-style supervision tree of Pykka actors.\n\n"
          "Exit codes: 0 ok, 1 the operation failed, 2 bad usage or input. Every command, "
          "option, format and config key is described in docs/reference.md."),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", envvar="MYCELIUM_HOME",
                 help="Mesh home directory: keys, repo, state, logs, control socket "
                      "(default ./.mycelium)"),
]


def home_of(option: Path | None) -> Home:
    """Resolve the ``--home`` option to a :class:`Home`."""
    return resolve_home(option)

