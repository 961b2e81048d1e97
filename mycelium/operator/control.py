"""The control socket: how the CLI (and ``mycelium repl``) talk to a running mesh.

A unix socket ``<home>/control.sock`` (mode 0600, inside the 0700 home). One request per
connection: a JSON line ``{"op": ..., ...}`` in, a JSON line ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "...", "exit_code": N}`` out. Two generic ops reach any actor by its
registered name with any message of :mod:`mycelium.messages` — ``tell`` and ``ask`` — so a REPL
needs nothing else; the mesh adds its own ops (``status``, ``deploy``, ``down`` …).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pykka

from mycelium._logger import get_logger
from mycelium.errors import MyceliumError
from mycelium.messages import Crash, CrashRequested, GetInfo, from_wire, to_wire
from mycelium.operator.client import MAX_LINE, ControlClient, ControlError, NoMesh, encode_line
from supervisors import SupervisedActor

if TYPE_CHECKING:  # only annotated: the mesh passes its Names in
    from mycelium.fabric.names import Names

__all__ = ["ControlActor", "ControlClient", "ControlError", "NoMesh", "Op"]

log = get_logger(__name__)

Op = Callable[[dict[str, Any]], Any]


class ControlActor(SupervisedActor):
    """The ``control`` worker: serves the control socket from an accept thread.

    Args:
        names: The mesh's registered names (``tell``/``ask`` targets).
        path: The socket path.
        ops: The mesh's own operations by name.
    """

    def __init__(self, names: Names, path: Path, ops: Mapping[str, Op]) -> None:
        super().__init__()
        self._names = names
        self._path = path
        self._ops = dict(ops)
        self._sock: socket.socket | None = None

    def on_start(self) -> None:
        """Bind the socket (replacing a stale one; the home's flock says it is ours)."""
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self._path))
        os.chmod(self._path, 0o600)
        sock.listen(128)
        self._sock = sock
        self._names.register("control", self.actor_ref)
        threading.Thread(target=self._serve, args=(sock,), name="control-accept",
                         daemon=True).start()

    def on_stop(self) -> None:
        """Close the socket."""
        self._close()

    def on_failure(self, *_exc: object) -> None:
        """Close the socket so that the successor can bind it."""
        self._close()

    def _close(self) -> None:
        self._names.unregister("control", self.actor_ref)
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
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
                return {"name": "control", "socket": str(self._path), "ops": sorted(self._ops)}
        return None

    # -- serving ---------------------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._connection, args=(conn,), name="control-conn",
                             daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as rfile:
            line = rfile.readline(MAX_LINE)
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
            with contextlib.suppress(OSError):
                conn.sendall(encode_line(reply) + b"\n")

    def handle(self, request: dict[str, Any]) -> Any:
        """Serve one request (runs in a connection thread, never in the actor's mailbox).

        Raises:
            ControlError: unknown op or actor name.
        """
        op = request.get("op")
        if op in ("tell", "ask"):
            name = str(request.get("to"))
            ref = self._names.get(name)
            if ref is None:
                raise ControlError(f"no actor named {name!r} is running "
                                   f"(known: {', '.join(self._names.names())})", 1)
            message = from_wire(request.get("msg"))
            if op == "tell":
                ref.tell(message)
                return None
            timeout = float(request.get("ask_timeout", 5.0))
            return to_wire(ref.ask(message, timeout=timeout))
        if op == "names":
            return self._names.names()
        if op == "info":
            ref = self._names.get(str(request.get("to")))
            return None if ref is None else ref.ask(GetInfo(), timeout=5.0)
        handler = self._ops.get(str(op))
        if handler is None:
            raise ControlError(f"unknown control op {op!r}", 2)
        return handler(request)
