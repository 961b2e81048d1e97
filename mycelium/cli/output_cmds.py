"""``mycelium output APP``: a workload's stdout and stderr, kept per instance in the home.

It reads the home's files (see :mod:`mycelium.operator.output`), so it works with or without a
running mesh; with ``--follow`` a replacement instance's output joins the stream by itself. The
common command lines are served by the fast path (:mod:`.fast`) with the same function.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from .app import HomeOption, app, home_of

__all__ = ["output_cmd"]


@app.command("output")
def output_cmd(app_name: Annotated[str, typer.Argument(
                   metavar="APP", help="The app whose workloads' output to print")],
               home: HomeOption = None,
               node: Annotated[str | None, typer.Option(
                   "--node", help="Only the instances on this node")] = None,
               instance: Annotated[str | None, typer.Option(
                   "--instance", help="One kept instance, stopped or crashed ones too "
                   "(default: the current ones)")] = None,
               stream: Annotated[str | None, typer.Option(
                   "--stream", help="stdout or stderr (default: both)")] = None,
               tail: Annotated[int | None, typer.Option(
                   "--tail", help="The last N lines of each instance")] = None,
               since: Annotated[str | None, typer.Option(
                   "--since", help="Lines written since: 30s, 10m, 2h or an RFC 3339 time")
               ] = None,
               follow: Annotated[bool, typer.Option(
                   "--follow", "-f", help="Go on printing; a replacement's output joins")
               ] = False,
               as_json: Annotated[bool, typer.Option(
                   "--json", help="One JSON object per line: ts, app, node, instance, stream, "
                   "line")] = False) -> None:
    """APP's stdout/stderr, oldest first: the current instances, or any kept one."""
    from mycelium.operator.output import run

    with contextlib.suppress(KeyboardInterrupt):
        run(home_of(home).instances, app_name, node=node, instance=instance, stream=stream,
            tail=tail, since=since, follow=follow, as_json=as_json)
