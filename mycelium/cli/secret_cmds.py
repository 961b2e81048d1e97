"""``mycelium secret set|list|rm`` and ``secret key export|import`` (docs/reference.md#secrets).

Where a secret goes: when a mesh runs on the home, through its control socket
(:mod:`.secret_rollout`, which the fast path's ``secret set`` shares) — the mesh seals it into
its own store (the home's, or etcd for a member) and rolls the app out blue/green; when none
runs, straight into the home's store (the next ``up`` delivers it). A value is read from stdin
only, never from the command line (which every user of the machine can read).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer

from mycelium.errors import OperationFailed
from mycelium.home import Home
from mycelium.operator.client import ControlClient, NoMesh
from mycelium.secrets import (
    MAX_VALUE,
    SecretKeyError,
    check_app,
    check_name,
    check_value,
    export_key,
    home_secrets,
    import_key,
)

from .app import HomeOption, app, home_of, out
from .secret_rollout import follow, instance_ids, send_set

__all__ = ["secret_app"]

secret_app = typer.Typer(help="Secrets of apps: set, list, rm; key export/import.",
                         no_args_is_help=True)
key_app = typer.Typer(help="Move the secrets key between the homes of a mesh's members.",
                      no_args_is_help=True)
secret_app.add_typer(key_app, name="key")
app.add_typer(secret_app, name="secret")

AppArg = Annotated[str, typer.Argument(help="The app's name")]
NameArg = Annotated[str, typer.Argument(help="The secret's name: ^[A-Z_][A-Z0-9_]{0,63}$")]


def read_value(stream: Any) -> bytes:
    """The value from ``stream`` (binary stdin): 1 byte to 64 KiB, exactly as given.

    Raises:
        BadSecret: empty, or more than 64 KiB.
    """
    data = stream.read(MAX_VALUE + 1)
    return check_value(data if isinstance(data, bytes) else b"")


def _mesh(home: Home) -> ControlClient | None:
    """The running mesh's client, or None when no mesh runs on ``home``."""
    client = ControlClient(home)
    try:
        client.request("names", timeout=5.0)
    except NoMesh:
        return None
    return client


@secret_app.command("set")
def set_cmd(name_app: AppArg, name: NameArg, home: HomeOption = None,
            wait: Annotated[bool, typer.Option(
                "--wait/--no-wait", help="Return once the app's instances run the new value "
                                         "(when a mesh runs the app)")] = True,
            timeout: Annotated[float, typer.Option(
                "--timeout", help="Seconds to wait for the rollout")] = 60.0) -> None:
    """Set secret NAME of APP to the value read from stdin (never from the command line)."""
    check_app(name_app)
    check_name(name)
    value = read_value(sys.stdin.buffer)
    h = home_of(home)
    client = _mesh(h)
    if client is None:
        home_secrets(h.ensure()).set(name_app, name, value)
        out(f"secret {name} of {name_app} set in {h.root} (no mesh running: instances get it "
            "when they start)")
        return
    send_set(client.request, name_app, name, value, instance_ids(client.request, name_app),
             wait, timeout)


@secret_app.command("rm")
def rm_cmd(name_app: AppArg, name: NameArg, home: HomeOption = None,
           wait: Annotated[bool, typer.Option(
               "--wait/--no-wait", help="Return once the app's instances run without it")] = True,
           timeout: Annotated[float, typer.Option(
               "--timeout", help="Seconds to wait for the rollout")] = 60.0) -> None:
    """Remove secret NAME of APP (a running app rolls out without it)."""
    check_app(name_app)
    check_name(name)
    h = home_of(home)
    client = _mesh(h)
    if client is None:
        if not home_secrets(h).remove(name_app, name):
            raise OperationFailed(f"app {name_app} has no secret {name}")
        out(f"secret {name} of {name_app} removed from {h.root}")
        return
    before = instance_ids(client.request, name_app)
    result = client.request("secret_rm", app=name_app, name=name)
    follow(client.request, name_app, f"secret {name} of {name_app} removed", result, before,
           wait, timeout)


@secret_app.command("list")
def list_cmd(name_app: AppArg, home: HomeOption = None,
             as_json: Annotated[bool, typer.Option("--json", help="One JSON array")] = False
             ) -> None:
    """The names of APP's secrets and when each was last set (never a value)."""
    check_app(name_app)
    h = home_of(home)
    client = _mesh(h)
    if client is None:
        rows: list[dict[str, Any]] = [{"name": n, "updated_at": t}
                                      for n, t in home_secrets(h).list(name_app)]
    else:
        rows = list(client.request("secret_list", app=name_app))
    if as_json:
        out(orjson.dumps([{"name": r["name"], "updated_at": _rfc3339(r["updated_at"])}
                          for r in rows]).decode())
        return
    for r in rows:
        out(f"{r['name']}\t{_rfc3339(r['updated_at'])}")


@key_app.command("export")
def key_export_cmd(home: HomeOption = None) -> None:
    """Print the home's secrets key (hex) for `secret key import` on another member."""
    out(export_key(home_of(home)))


@key_app.command("import")
def key_import_cmd(home: HomeOption = None,
                   force: Annotated[bool, typer.Option(
                       "--force", help="Replace a different key (its secrets stop opening)")
                   ] = False) -> None:
    """Install a secrets key read from stdin (what `secret key export` printed)."""
    text = sys.stdin.read(4096)
    if not text.strip():
        raise SecretKeyError("empty stdin: pipe in what `mycelium secret key export` printed")
    h = home_of(home).ensure()
    changed = import_key(h, text, force=force)
    out(f"secrets key {'imported into' if changed else 'already in'} {h.root}")


def _rfc3339(ts: Any) -> str:
    return datetime.fromtimestamp(float(ts), UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
