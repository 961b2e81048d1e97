"""The commands of desired state in a file: ``plan``, ``apply``, ``export``.

Each one parses, calls :mod:`.applying` (and :mod:`mycelium.desired`), and renders; the
module's docstring there says in which order ``apply`` does what.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from mycelium.errors import OperationFailed
from mycelium.operator.client import ControlClient

from .app import HomeOption, app, home_of, out
from .lines import err

__all__ = ["apply_cmd", "export_cmd", "plan_cmd"]

FileArgument = Annotated[Path, typer.Argument(metavar="FILE", help="Desired state (TOML)")]
PruneOption = Annotated[bool, typer.Option(
    "--prune", help="Also destroy running apps the file does not name")]


@app.command("plan")
def plan_cmd(file: FileArgument, home: HomeOption = None, prune: PruneOption = False,
             as_json: Annotated[bool, typer.Option(
                 "--json", help="One JSON document for scripts")] = False) -> None:
    """Show what `apply FILE` would change, app by app and field by field; change nothing."""
    from .applying import plan_file

    h = home_of(home)
    plan_file(h, ControlClient(h).request, file, prune, as_json)


@app.command("apply")
def apply_cmd(
    file: FileArgument,
    home: HomeOption = None,
    prune: PruneOption = False,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Wait until every changed app converged")] = True,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="Seconds to wait for all of them [each app's timeout + warmup + 5]")
    ] = None,
    key: Annotated[str, typer.Option("--key", help="Signing key for the spores it packs")
                   ] = "default",
) -> None:
    """Make the mesh match FILE: pack what changed, deploy every change, follow the rollouts."""
    from mycelium.desired import diff
    from mycelium.desired.text import plan_lines

    from . import applying
    from .apply_view import make_view, summary

    if timeout is not None and not timeout > 0:
        from mycelium.errors import BadInput

        raise BadInput(f"--timeout must be > 0, got {timeout:g}")
    h = home_of(home)
    started = time.monotonic()
    desired = applying.load_desired(h, file)  # all of the file, before anything is done
    request = ControlClient(h).request
    with applying.apply_lock(h, err):
        running, default_timeout = applying.read_mesh(request)
        changes = diff(desired.apps, running, prune, default_timeout)
        todo = [c for c in changes if c.changing]
        if not todo:
            out(f"nothing to do: {len(changes)} app{'s' if len(changes) != 1 else ''} "
                "unchanged")
            return
        for line in plan_lines(todo):
            err(line)
        digests = applying.pack_changed(h, todo, key)
        generations = applying.publish_batch(request, changes, running, digests, prune)
        if not wait:
            for c in todo:
                gen = generations.get(c.app)
                out(f"{c.app}: {c.action} sent" + (f" (generation {gen})" if gen else ""))
            return
        view = make_view()
        view.start([applying.Outcome(c.app, c.action) for c in todo])
        try:
            outcomes = applying.follow(request, todo, digests, generations, started, timeout,
                                       view.change, view.line)
        finally:
            view.stop()
    for line in summary(outcomes, time.monotonic() - started):
        out(line)
    failed = [o for o in outcomes if o.result != "ok"]
    if failed:
        which = "; ".join(f"{o.app} ({o.result}: {o.detail})" for o in failed)
        raise OperationFailed(f"{len(failed)} of {len(outcomes)} changes failed: {which}; "
                              "the others are kept")


@app.command("export")
def export_cmd(home: HomeOption = None) -> None:
    """Print the running mesh's desired state as a file `plan` reads back as unchanged."""
    from datetime import UTC, datetime

    from mycelium.desired.text import export_toml

    from .applying import read_mesh

    h = home_of(home)
    running, _ = read_mesh(ControlClient(h).request)
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    header = (f"Desired state of the mesh at {h.root}, exported {at}.\n"
              "`mycelium plan FILE` reads it back as unchanged; `mycelium apply FILE` "
              "restores it.")
    sys.stdout.write(export_toml(list(running.values()), header))
    sys.stdout.flush()
