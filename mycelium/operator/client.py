"""The CLI's side of the control socket (see :mod:`mycelium.operator.control` for the protocol).

Kept apart from the server so that a CLI command that only talks to a running mesh imports
a socket, orjson and nothing of the mesh itself: `mycelium status` starts fast.
"""

from __future__ import annotations

import socket
from typing import Any

import orjson

from mycelium.errors import MyceliumError, OperationFailed
from mycelium.home import Home

__all__ = ["MAX_LINE", "ControlClient", "ControlError", "NoMesh", "encode_line"]

MAX_LINE = 16 * 1024 * 1024
"""The longest JSON line either side of the control socket reads."""


class ControlError(MyceliumError):
    """The mesh refused or failed a request; carries the mesh's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NoMesh(OperationFailed):
    """No mesh answers on this home's control socket."""


def encode_line(obj: Any) -> bytes:
    """One request or reply as JSON (messages in their wire form), without the newline."""
    return orjson.dumps(obj, default=_wire_default)


def _wire_default(obj: Any) -> Any:
    if hasattr(obj, "__slots__"):
        from mycelium.messages import to_wire  # only messages need it: imported on demand

        return to_wire(obj)
    return str(obj)


class ControlClient:
    """The CLI's side of the control socket.

    Args:
        home: The mesh home whose socket to use.
    """

    def __init__(self, home: Home) -> None:
        self.home = home

    def request(self, op: str, timeout: float = 30.0, **fields: Any) -> Any:
        """Send one request and return its result.

        Raises:
            NoMesh: nothing listens on the home's control socket.
            ControlError: the mesh answered with an error (its exit code is kept).
        """
        path = self.home.control_socket
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            try:
                sock.connect(str(path))
            except (FileNotFoundError, ConnectionRefusedError):
                raise NoMesh(f"no mesh running at {self.home.root} (start one with "
                             f"`mycelium up --home {self.home.root}`)") from None
            sock.sendall(encode_line({"op": op, **fields}) + b"\n")
            with sock.makefile("rb") as rfile:
                line = rfile.readline(MAX_LINE)
        except TimeoutError:
            raise ControlError(f"the mesh at {self.home.root} did not answer within "
                               f"{timeout:g}s", 1) from None
        finally:
            sock.close()
        if not line:
            raise ControlError("the mesh closed the control connection without answering", 1)
        reply = orjson.loads(line)
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error")), int(reply.get("exit_code", 1)))
        return reply.get("result")

    def tell(self, to: str, message: Any) -> None:
        """Tell actor ``to`` a message (fire and forget)."""
        from mycelium.messages import to_wire

        self.request("tell", to=to, msg=to_wire(message))

    def ask(self, to: str, message: Any, timeout: float = 5.0) -> Any:
        """Ask actor ``to`` a message and return its (wire-form) answer."""
        from mycelium.messages import to_wire

        return self.request("ask", timeout=timeout + 1.0, to=to, msg=to_wire(message),
                            ask_timeout=timeout)
