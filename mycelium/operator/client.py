"""The CLI's side of the control socket (see :mod:`mycelium.operator.control` for the protocol).

Kept apart from the server so that a CLI command that only talks to a running mesh imports
a socket and nothing of the mesh itself: `mycelium status` starts fast. orjson (whose own import
pulls in dataclasses, uuid and json: ~15 ms) is imported on first encode or decode, so that the
CLI's fast path (:mod:`mycelium.cli.fast`), which sends plain requests, can use
:meth:`ControlClient.exchange` with the standard library's json instead.
"""

from __future__ import annotations

import socket

from mycelium.errors import MyceliumError, OperationFailed

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on every CLI start

if TYPE_CHECKING:
    from os import PathLike
    from typing import Any, Protocol

    class HomeLike(Protocol):
        """What the client reads of a :class:`mycelium.home.Home`."""

        @property
        def root(self) -> object: ...

        @property
        def control_socket(self) -> str | PathLike[str]: ...


__all__ = ["MAX_LINE", "ControlClient", "ControlError", "NoMesh", "encode_line", "reply_result"]

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
    import orjson  # on first use: see the module's docstring

    return orjson.dumps(obj, default=_wire_default)


def _wire_default(obj: Any) -> Any:
    if hasattr(obj, "__slots__"):
        from mycelium.messages import to_wire  # only messages need it: imported on demand

        return to_wire(obj)
    return str(obj)


def reply_result(reply: Any) -> Any:
    """The result of one decoded reply line.

    Raises:
        ControlError: the mesh answered with an error (its exit code is kept).
    """
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error")), int(reply.get("exit_code", 1)))
    return reply.get("result")


class ControlClient:
    """The CLI's side of the control socket.

    Args:
        home: The mesh home whose socket to use (a :class:`mycelium.home.Home`, or anything
            with its ``root`` and ``control_socket``).
    """

    def __init__(self, home: HomeLike) -> None:
        self.home = home

    def exchange(self, request: bytes, timeout: float = 30.0) -> bytes:
        """Send one encoded request (no newline) and return the raw reply line.

        Raises:
            NoMesh: nothing listens on the home's control socket (nothing was sent).
            ControlError: no answer within ``timeout``, or the connection closed unanswered.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            self._connect(sock, timeout)
            try:  # noqa: SIM105  (no contextlib: this module keeps the CLI's imports few)
                sock.sendall(request + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused at once (too many connections): its reason waits to be read
            with sock.makefile("rb") as rfile:
                line = rfile.readline(MAX_LINE)
        except TimeoutError:
            raise ControlError(f"the mesh at {self.home.root} did not answer within "
                               f"{timeout:g}s", 1) from None
        finally:
            sock.close()
        if not line:
            raise ControlError("the mesh closed the control connection without answering", 1)
        return line

    def _connect(self, sock: socket.socket, timeout: float) -> None:
        """Connect, waiting while the socket's backlog is full (a busy mesh, not a gone one).

        Raises:
            NoMesh: nothing listens on the home's control socket.
            TimeoutError: the backlog stayed full for ``timeout`` seconds.
        """
        import time  # only on this path's rare retry would it matter; it is cheap anyway

        deadline = time.monotonic() + timeout
        while True:
            try:
                sock.connect(str(self.home.control_socket))
                return
            except (FileNotFoundError, ConnectionRefusedError):
                raise NoMesh(f"no mesh running at {self.home.root} (start one with "
                             f"`mycelium up --home {self.home.root}`)") from None
            except BlockingIOError:  # a unix socket's full backlog, with a timeout set
                if time.monotonic() >= deadline:
                    raise TimeoutError from None
                time.sleep(0.005)

    def request(self, op: str, timeout: float = 30.0, **fields: Any) -> Any:
        """Send one request and return its result.

        Raises:
            NoMesh: nothing listens on the home's control socket.
            ControlError: the mesh answered with an error (its exit code is kept).
        """
        import orjson  # on first use: see the module's docstring

        line = self.exchange(encode_line({"op": op, **fields}), timeout)
        return reply_result(orjson.loads(line))

    def tell(self, to: str, message: Any) -> None:
        """Tell actor ``to`` a message (fire and forget)."""
        from mycelium.messages import to_wire

        self.request("tell", to=to, msg=to_wire(message))

    def ask(self, to: str, message: Any, timeout: float = 5.0) -> Any:
        """Ask actor ``to`` a message and return its (wire-form) answer."""
        from mycelium.messages import to_wire

        return self.request("ask", timeout=timeout + 1.0, to=to, msg=to_wire(message),
                            ask_timeout=timeout)
