"""The CLI's fast path: ``status``, ``kill``, ``stop``, ``deploy``, ``plan``, ``output``,
``secret set`` without Typer.

Typer and click cost ~100 ms of imports, more than a ``status`` request takes. This module
serves the common, fully valid command lines of seven commands with a tiny parser and the
standard library (os, sys, socket, json; the light :class:`ControlClient`):

- ``status [APP] [--json] [--home H]``
- ``kill APP [--node N] [--signal S] [--home H]``
- ``stop APP [--home H]``
- ``plan FILE [--prune] [--json] [--home H]`` (a plan reads only; its imports, not Typer's)
- ``deploy APP DIGEST [--min N] [--max N] [--max-instances N] [--cpu F] [--mem N]
  [--warmup F] [--timeout F] [--wait | --no-wait] [--home H]``, numbers in plain decimal
- ``output APP [--node N] [--instance I] [--stream S] [--tail N] [--since D] [--follow | -f]
  [--json] [--home H]`` (it reads the home's files: :func:`mycelium.operator.output.run`)
- ``secret set APP NAME [--wait | --no-wait] [--timeout F] [--home H]`` to a running mesh (with
  none, it gives way before reading stdin: the Typer path writes the home's store)

Options may come before or after the argument, ``--opt=value`` too, each at most once. Anything
else — ``--help``, ``--debug`` or ``MYCELIUM_DEBUG=1``, an unknown or repeated option, an empty
value or one starting with ``-``, another command — returns ``None`` from :func:`run_fast`
before anything is sent, and the full Typer CLI (:mod:`.full`) runs instead. ``status`` reads
only, so it also gives way when a reply cannot be decoded (Typer's path reports that).

Errors are rendered as the Typer path renders them (same exception classes, same handlers,
messages that name the home built by :func:`mycelium.home.resolve_home`), and the output is
the same bytes: ``status --json`` prints the result's bytes exactly as the mesh encoded them
with orjson, which is what re-encoding them with orjson prints.
"""

from __future__ import annotations

import errno
import json
import os
import sys

from mycelium.defaults import DeployDefaults
from mycelium.errors import BadInput, MyceliumError, OperationFailed
from mycelium.operator.client import ControlClient, reply_result
from mycelium.states import InstanceState

from .lines import fail, out

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on every CLI start
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import IO, Any

__all__ = ["parse", "run_fast", "signal_number", "stop_app"]

# command: (least, most positional arguments, flags, options taking a value)
_SHAPES: dict[str, tuple[int, int, frozenset[str], frozenset[str]]] = {
    "status": (0, 1, frozenset({"--json"}), frozenset({"--home"})),
    "kill": (1, 1, frozenset(), frozenset({"--home", "--node", "--signal"})),
    "stop": (1, 1, frozenset(), frozenset({"--home"})),
    "plan": (1, 1, frozenset({"--prune", "--json"}), frozenset({"--home"})),
    "output": (1, 1, frozenset({"--json", "--follow", "-f"}),
               frozenset({"--home", "--node", "--instance", "--stream", "--tail", "--since"})),
    "deploy": (2, 2, frozenset({"--wait", "--no-wait"}),
               frozenset({"--home", "--min", "--max", "--max-instances", "--cpu", "--mem",
                          "--warmup", "--timeout", "--idle", "--target-concurrency"})),
    "secret set": (2, 2, frozenset({"--wait", "--no-wait"}), frozenset({"--home", "--timeout"})),
}
_INTEGER = frozenset("0123456789")
_DEPLOY_INTS = {"--min": DeployDefaults.MIN, "--max": DeployDefaults.MAX,
                "--mem": DeployDefaults.MEM}
#: ``--timeout`` absent: None, the mesh applies its ``[rollout] timeout``
_DEPLOY_FLOATS: dict[str, float | None] = {"--cpu": DeployDefaults.CPU, "--timeout": None,
                                           "--idle": None, "--target-concurrency": None}

_OK_PREFIX = b'{"ok":true,"result":'
"""How the mesh's orjson encodes ``{"ok": True, "result": …}`` up to the result."""


class _Decline(Exception):
    """The fast path gives way to the Typer CLI (raised only before anything changed)."""


def parse(args: list[str]) -> tuple[str, list[str], dict[str, str | bool]] | None:
    """Split a command line the fast path serves into (command, arguments, options).

    Returns:
        ``None`` for anything outside the shapes in the module's docstring.
    """
    words = 2 if args[:2] == ["secret", "set"] else 1  # the one command of two words
    command = " ".join(args[:words])
    if not args or command not in _SHAPES or command.count(" ") != words - 1:
        return None
    least, most, flags, valued = _SHAPES[command]
    positional: list[str] = []
    options: dict[str, str | bool] = {}
    rest = iter(args[words:])
    for token in rest:
        if not token.startswith("-"):
            positional.append(token)
            continue
        name, eq, value = token.partition("=")
        if name in options:
            return None
        if name in flags and not eq:
            options[name] = True
        elif name in valued:
            if not eq:
                value = next(rest, "")
            if not value or value.startswith("-"):
                return None
            options[name] = value
        else:
            return None
    if not least <= len(positional) <= most:
        return None
    return command, positional, options


class _Home:
    """A home's control socket, found without :mod:`mycelium.home` (pathlib, dataclasses).

    ``root`` (only error messages name it) is the one :func:`resolve_home` gives, so that the
    messages read as on the Typer path.
    """

    def __init__(self, option: str | None) -> None:
        self.option = option
        raw = option if option is not None else os.environ.get("MYCELIUM_HOME") or ".mycelium"
        path = os.path.expanduser(raw)
        if path.startswith("~"):  # pathlib raises here: let the Typer path report it
            raise _Decline(raw)
        if not os.path.isabs(path):  # as Path.absolute(): the working directory, unresolved
            path = os.path.join(os.getcwd(), path)
        self.control_socket = os.path.join(path, "control.sock")

    @property
    def root(self) -> Path:
        """The home's root, exactly as the Typer path resolves it."""
        from pathlib import Path

        from mycelium.home import resolve_home

        return resolve_home(None if self.option is None else Path(self.option)).root


def _request(client: ControlClient, op: str, **fields: Any) -> Any:
    """One request with the standard library's json (see :mod:`mycelium.operator.client`)."""
    return reply_result(json.loads(client.exchange(json.dumps({"op": op, **fields}).encode())))


def _requester(client: ControlClient) -> Callable[..., Any]:
    return lambda op, **fields: _request(client, op, **fields)


def _output(app: str, options: dict[str, str | bool]) -> None:
    """``output``: reads the home's files (no Typer, no mesh needed)."""
    tail = options.get("--tail")
    if isinstance(tail, str) and not set(tail) <= _INTEGER:
        raise _Decline(tail)  # Typer reports a tail that is not a number
    from pathlib import Path

    from mycelium.home import resolve_home
    from mycelium.operator.output import run

    home = options.get("--home")

    def text(name: str) -> str | None:
        value = options.get(name)
        return value if isinstance(value, str) else None

    try:
        run(resolve_home(Path(home) if isinstance(home, str) else None).instances, app,
            node=text("--node"), instance=text("--instance"), stream=text("--stream"),
            tail=int(tail) if isinstance(tail, str) else None, since=text("--since"),
            follow="--follow" in options or "-f" in options, as_json="--json" in options)
    except KeyboardInterrupt:
        return


def run_fast(args: list[str]) -> int | None:
    """Serve ``args`` if they are a shape this module knows; the exit code, or ``None``.

    ``None`` means nothing was changed (nothing sent, or only a ``status`` request) and the
    Typer CLI should run ``args``. Errors exit as the Typer path exits (one ``error:`` line,
    the CLI's exit codes: 2 bad input, 1 failed).
    """
    if os.environ.get("MYCELIUM_DEBUG") == "1":
        return None
    parsed = parse(args)
    if parsed is None:
        return None
    command, positional, options = parsed
    home = options.get("--home")

    def client() -> ControlClient:
        return ControlClient(_Home(home if isinstance(home, str) else None))

    try:
        if command == "status":
            _status(client(), positional[0] if positional else None, "--json" in options)
        elif command == "kill":
            _kill(client, positional[0], options)
        elif command == "deploy":
            _deploy(lambda: _requester(client()), positional, options)
        elif command == "plan":
            _plan(client, positional[0], options)
        elif command == "output":
            _output(positional[0], options)
        elif command == "secret set":
            _secret_set(client, positional, options)
        else:
            c = client()
            stop_app(lambda op, **fields: _request(c, op, **fields), positional[0])
    except _Decline:
        return None
    except KeyboardInterrupt:
        return 130  # as Typer's own handler (no message)
    except MyceliumError as exc:
        fail(str(exc), exc.exit_code)
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
        # as click: a reader that went away is exit 1, and no noise when Python exits
        sys.stdout = _Pacified(sys.stdout)
        sys.stderr = _Pacified(sys.stderr)
        return 1
    except Exception as exc:
        fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
    return 0


def _status(client: ControlClient, app_name: str | None, as_json: bool) -> None:
    line = client.exchange(json.dumps({"op": "status", "app": app_name}).encode())
    try:
        reply = json.loads(line)
    except ValueError:  # orjson's message is the Typer path's: let it say it
        raise _Decline("undecodable reply") from None
    status = reply_result(reply)
    if app_name is not None and not status["apps"]:
        raise BadInput(f"no app named {app_name!r}")
    if not as_json:
        from mycelium.operator.render import render_status

        out(render_status(status))
        return
    if line.startswith(_OK_PREFIX) and line.endswith(b"}\n") and list(reply) == ["ok", "result"]:
        body = line[len(_OK_PREFIX):-2]  # the reply's own bytes of the result
    else:  # pragma: no cover - a mesh that frames replies differently
        import orjson

        body = orjson.dumps(status)
    sys.stdout.buffer.write(body + b"\n")


def _plan(client: Callable[[], ControlClient], file: str,
          options: dict[str, str | bool]) -> None:
    """``plan FILE``: the Typer command's own function, without Typer."""
    from pathlib import Path

    from mycelium.home import Home

    from .applying import plan_file

    c = client()
    plan_file(Home(Path(str(c.home.root))), _requester(c), Path(file), "--prune" in options,
              "--json" in options)


def _kill(client: Callable[[], ControlClient], app_name: str,
          options: dict[str, str | bool]) -> None:
    node, sig = options.get("--node"), options.get("--signal", "SIGKILL")
    number = signal_number(str(sig))  # first, as on the Typer path
    for pid in _request(client(), "kill", app=app_name, node=node, signal=number):
        out(str(pid))


def _deploy(connect: Callable[[], Callable[..., Any]], positional: list[str],
            options: dict[str, str | bool]) -> None:
    """``deploy APP DIGEST`` with plain decimal numbers; anything else is the Typer path's."""
    from .deploying import deploy_app

    if "--wait" in options and "--no-wait" in options:
        raise _Decline("--wait and --no-wait")
    ints = {name: _decimal(options.get(name), default, int)
            for name, default in _DEPLOY_INTS.items()}
    floats = {name: _decimal(options.get(name), default, float)
              for name, default in _DEPLOY_FLOATS.items()}
    max_instances = options.get("--max-instances")
    warmup = options.get("--warmup")
    deploy_app(connect, positional[0], positional[1], n_min=ints["--min"], n_max=ints["--max"],
               max_instances=None if max_instances is None else _decimal(max_instances, 0, int),
               cpu=floats["--cpu"], mem=ints["--mem"],
               warmup=None if warmup is None else _decimal(warmup, 0.0, float),
               wait="--no-wait" not in options, timeout=floats["--timeout"],
               idle=floats["--idle"], target_concurrency=floats["--target-concurrency"])


def _secret_set(client: Callable[[], ControlClient], positional: list[str],
                options: dict[str, str | bool]) -> None:
    """``secret set APP NAME`` to a running mesh: checked as the Typer command checks it, but
    the value is read only once a mesh answered (with none, nothing was read: give way)."""
    from mycelium.operator.client import NoMesh
    from mycelium.secrets.names import MAX_VALUE, check_app, check_name, check_value

    from .secret_rollout import instance_ids, send_set

    if "--wait" in options and "--no-wait" in options:
        raise _Decline("--wait and --no-wait")
    timeout = _decimal(options.get("--timeout"), 60.0, float)
    name_app, name = check_app(positional[0]), check_name(positional[1])
    request = _requester(client())
    try:
        before = instance_ids(request, name_app)
    except NoMesh:
        raise _Decline("no mesh") from None
    value = check_value(sys.stdin.buffer.read(MAX_VALUE + 1))
    send_set(request, name_app, name, value, before, "--no-wait" not in options, timeout)


def _decimal(text: str | bool | None, default: Any, kind: Callable[[str], Any]) -> Any:
    """A plain decimal (``12``, or ``0.5`` for a float) as Typer reads it; anything else —
    signs, exponents, ``inf``, underscores, spaces — is left to Typer and its exact error."""
    if text is None:
        return default
    assert isinstance(text, str)
    whole, dot, fraction = text.partition(".")
    plain = (whole and set(whole) <= _INTEGER
             and (not dot or (kind is float and fraction and set(fraction) <= _INTEGER)))
    if not plain:
        raise _Decline(text)
    return kind(text)


def signal_number(text: str) -> int:
    """``9``, ``KILL``, ``sigkill`` or ``SIGKILL`` as a signal number.

    Raises:
        BadInput: not a signal this platform knows.
    """
    if text.isdigit():
        return int(text)
    import signal

    name = text.upper() if text.upper().startswith("SIG") else f"SIG{text.upper()}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise BadInput(f"unknown signal {text!r}") from None


def stop_app(request: Callable[..., Any], app_name: str, timeout: float = 60.0) -> None:
    """Remove the app's plan, then wait until none of its instances runs.

    Raises:
        OperationFailed: instances still running after ``timeout`` seconds.
    """
    import time

    request("stop", app=app_name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = request("status", app=app_name)
        if not any(i["state"] != InstanceState.STOPPED
                   for a in status["apps"] for i in a["instances"]):
            out(f"stopped {app_name}")
            return
        time.sleep(0.02)
    raise OperationFailed(f"{app_name}: instances still running after {timeout:g}s")


class _Pacified:
    """A stream whose flush ignores a closed pipe (click's ``PacifyFlushWrapper``)."""

    def __init__(self, wrapped: IO[Any]) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)
