"""The control socket: how the CLI (and ``mycelium repl``) talk to a running mesh.

A unix socket ``<home>/control.sock`` (mode 0600, inside the 0700 home). One request per
connection: a JSON line ``{"op": ..., ...}`` in, a JSON line ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "...", "exit_code": N}`` out. Two generic ops reach any actor by its
registered name with a message of :mod:`mycelium.messages` — ``tell`` and ``ask`` — so a REPL
needs nothing else; the mesh adds its own ops (``status``, ``deploy``, ``down`` …).

Nothing from the socket reaches an actor unchecked: the message is decoded with every field
checked against its annotation (:func:`mycelium.wire.decode_message`), and the messages only
the mesh's own actors send (:data:`mycelium.messages.REPORTS`: an instance's endpoint, an
agent's inventory …) are refused, since a well-typed forgery would still be a lie the mesh acts
on. A refused request gets an error reply; the actor never sees it. The socket's connections
and threads are bounded (:mod:`mycelium.operator.control_server`).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pykka

from mycelium._logger import get_logger
from mycelium.errors import MyceliumError
from mycelium.messages import REPORTS, Crash, CrashRequested, GetInfo, decode_message, to_wire
from mycelium.operator.client import ControlClient, ControlError, NoMesh, encode_line
from mycelium.operator.control_server import (
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    ControlServer,
    check_limits,
)
from supervisors import SupervisedActor

if TYPE_CHECKING:  # only annotated: the mesh passes its Names in
    from mycelium.fabric.names import Names

__all__ = ["ControlActor", "ControlClient", "ControlError", "NoMesh", "Op"]

log = get_logger(__name__)

Op = Callable[[dict[str, Any]], Any]

MAX_ASK_TIMEOUT = 300.0
"""The longest ``ask_timeout`` a request may set (a worker thread waits that long at most)."""


class ControlActor(SupervisedActor):
    """The ``control`` worker: serves the control socket from its own threads.

    Args:
        names: The mesh's registered names (``tell``/``ask`` targets).
        path: The socket path.
        ops: The mesh's own operations by name.
        max_connections: Open connections at most; also the worker threads at most.
        idle_timeout: Seconds a connection may take to send its request line.

    Raises:
        ValueError: a limit that is not positive (when the actor is made, before any bind).
    """

    def __init__(self, names: Names, path: Path, ops: Mapping[str, Op], *,
                 max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        super().__init__()
        check_limits(max_connections, idle_timeout)
        self._names = names
        self._path = path
        self._ops = dict(ops)
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._server: ControlServer | None = None

    def on_start(self) -> None:
        """Bind the socket (replacing a stale one; the home's flock says it is ours)."""
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self._path))
        os.chmod(self._path, 0o600)
        sock.listen(128)
        self._server = ControlServer(sock, self.handle_line,
                                     max_connections=self._max_connections,
                                     idle_timeout=self._idle_timeout)
        self._names.register("control", self.actor_ref)
        self._server.start()

    def on_stop(self) -> None:
        """Close the socket."""
        self._close()

    def on_failure(self, *_exc: object) -> None:
        """Close the socket so that the successor can bind it."""
        self._close()

    def _close(self) -> None:
        self._names.unregister("control", self.actor_ref)
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    def on_receive(self, message: Any) -> Any:
        """Only :class:`Crash` and :class:`GetInfo`: requests are served by threads.

        Raises:
            CrashRequested: on :class:`Crash`.
        """
        match message:
            case Crash():
                raise CrashRequested("crash requested")
            case GetInfo():
                server = self._server
                return {"name": "control", "socket": str(self._path), "ops": sorted(self._ops),
                        "max_connections": self._max_connections,
                        "idle_timeout": self._idle_timeout,
                        "connections": 0 if server is None else server.connections(),
                        "threads": 0 if server is None else server.threads()}
        return None

    # -- serving ---------------------------------------------------------------------------

    def handle_line(self, line: bytes) -> bytes:
        """One request line in, one reply line out (runs in a worker thread; never raises)."""
        try:
            request = orjson.loads(line)
            if not isinstance(request, dict):
                raise ControlError("a request is a JSON object", 2)
            reply = {"ok": True, "result": self.handle(request)}
        except MyceliumError as exc:
            reply = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
        except pykka.Timeout:
            reply = {"ok": False, "error": "the mesh did not answer in time", "exit_code": 1}
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}", "exit_code": 2}
        except Exception as exc:
            log.exception("control request failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "exit_code": 1}
        try:
            return encode_line(reply)
        except TypeError as exc:  # an op answered something that is not JSON-able
            return encode_line({"ok": False, "error": f"unencodable reply: {exc}",
                                "exit_code": 1})

    def handle(self, request: dict[str, Any]) -> Any:
        """Serve one request (runs in a worker thread, never in the actor's mailbox).

        Raises:
            ControlError: unknown op or actor name, a message the socket does not accept.
            WireError: a message whose fields do not fit its type.
        """
        op = request.get("op")
        if op in ("tell", "ask"):
            name = request.get("to")
            if not isinstance(name, str):
                raise ControlError(f"{op}: 'to' must be an actor's name", 2)
            message = decode_message(request.get("msg"))  # checked before any actor sees it
            if type(message) in REPORTS:
                raise ControlError(f"{type(message).__name__} is sent only by the mesh's own "
                                   f"actors; the control socket does not accept it", 2)
            ref = self._names.get(name)
            if ref is None:
                raise ControlError(f"no actor named {name!r} is running "
                                   f"(known: {', '.join(self._names.names())})", 1)
            if op == "tell":
                ref.tell(message)
                return None
            return to_wire(ref.ask(message, timeout=_ask_timeout(request.get("ask_timeout"))))
        if op == "names":
            return self._names.names()
        if op == "info":
            ref = self._names.get(str(request.get("to")))
            return None if ref is None else ref.ask(GetInfo(), timeout=5.0)
        handler = self._ops.get(str(op))
        if handler is None:
            raise ControlError(f"unknown control op {op!r}", 2)
        return handler(request)


def _ask_timeout(value: Any) -> float:
    """A request's ``ask_timeout`` (default 5 s), checked.

    Raises:
        ControlError: not a number in (0, :data:`MAX_ASK_TIMEOUT`].
    """
    if value is None:
        return 5.0
    if type(value) not in (int, float) or not math.isfinite(value) \
            or not 0 < value <= MAX_ASK_TIMEOUT:
        raise ControlError(f"ask: 'ask_timeout' must be a number of seconds in "
                           f"(0, {MAX_ASK_TIMEOUT:g}]", 2)
    return float(value)
