"""``mycelium secret set|list|rm`` and ``secret key export|import`` (docs/reference.md#secrets).

Where a secret goes: when a mesh runs on the home, through its control socket — the mesh seals
it into its own store (the home's, or etcd for a member) and rolls the app out blue/green;
when none runs, straight into the home's store (the next ``up`` delivers it). A value is read
from stdin only, never from the command line (which every user of the machine can read).
"""

from __future__ import annotations

import base64
import sys
import time
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
    before = _instance_ids(client, name_app)
    result = client.request("secret_set", app=name_app, name=name,
                            value_b64=base64.b64encode(value).decode())
    del value
    _report(client, name_app, f"secret {name} of {name_app} set", result, before, wait, timeout)


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
    before = _instance_ids(client, name_app)
    result = client.request("secret_rm", app=name_app, name=name)
    _report(client, name_app, f"secret {name} of {name_app} removed", result, before, wait,
            timeout)


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


def _instance_ids(client: ControlClient, name_app: str) -> set[str]:
    doc = _app_doc(client, name_app)
    return set() if doc is None else {i["id"] for i in doc["instances"]}


def _app_doc(client: ControlClient, name_app: str) -> dict[str, Any] | None:
    for doc in client.request("status", app=name_app)["apps"]:
        if doc["app"] == name_app:
            return dict(doc)
    return None


def _report(client: ControlClient, name_app: str, what: str, result: dict[str, Any],
            before: set[str], wait: bool, timeout: float) -> None:
    """Say what happened; with ``wait``, follow the rollout until no old instance is left.

    Raises:
        OperationFailed: the rollout failed or did not finish within ``timeout``.
    """
    if not result.get("rollout"):
        out(f"{what} (the app is not deployed: its instances get it when they start)")
        return
    generation = int(result["generation"])
    if not wait:
        out(f"{what}: rolling out (generation {generation}, not waiting)")
        return
    started = time.monotonic()
    while True:
        doc = _app_doc(client, name_app)
        if doc is None:
            raise OperationFailed(f"{what}, but the app was stopped during its rollout")
        if doc.get("generation", 0) > generation and doc.get("plan_status") == "failed":
            raise OperationFailed(f"{what}, but its rollout failed: {doc.get('reason')}")
        live = [i for i in doc["instances"] if i["state"] != "Stopped"]
        old = [i for i in live if i["id"] in before]
        ready = sum(1 for i in live if i["id"] not in before and i["state"] == "Ready")
        if not old and ready >= max(doc["min"], 1 if doc["desired"] else 0):
            out(f"{what}: {ready}/{doc['desired']} instances replaced in "
                f"{time.monotonic() - started:.2f}s")
            return
        if time.monotonic() - started > timeout:
            raise OperationFailed(f"{what}, but its rollout did not finish within {timeout:g}s "
                                  f"({ready} new Ready, {len(old)} old left)")
        time.sleep(0.02)
