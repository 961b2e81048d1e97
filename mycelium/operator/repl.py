"""The mesh's Python console: ``mycelium up --repl`` and ``mycelium repl``.

Both consoles offer exactly the same names: ``fabric``, ``edge``, ``nodes`` (node name → the
node's agent), ``msg`` (:mod:`mycelium.messages`), ``tree()`` and ``status()``. A handle reaches
an actor by its registered name on every call (a restarted actor is a new ref), so a handle
keeps working across the restarts it is used to provoke: ``fabric.tell(msg.Crash())``.

- In ``up --repl`` the handles talk to the actors directly (answers are the real objects).
- ``mycelium repl`` attaches through the control socket: messages cross it as orjson
  (``to_wire``/``from_wire``), answers come back as the same message classes or plain data.

Leaving the console (Ctrl-D, ``exit()``) never stops the mesh. Readline history lives in
``<home>/repl_history``; Tab completes names and attributes. In ``up --repl`` the supervision
log keeps streaming: a line that arrives while the prompt waits is printed above the prompt and
the prompt with what was typed so far is drawn again, so the log never garbles the input line.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pykka

from mycelium import messages
from mycelium.errors import MyceliumError, OperationFailed
from mycelium.home import Home
from mycelium.operator.client import ControlClient, ControlError
from mycelium.operator.console import LeaveConsole, PromptSafeStream, PromptState, interact
from mycelium.operator.render import render_status, render_tree

if TYPE_CHECKING:
    from mycelium.mesh import Mesh

__all__ = ["HISTORY_FILE", "NAMES", "Backend", "Handle", "LocalBackend", "RemoteBackend",
           "StatusView", "TreeView", "banner", "namespace", "run_attached", "run_in_process"]

#: What both consoles offer, in banner order.
NAMES = ("fabric", "edge", "nodes", "msg", "tree()", "status()")
HISTORY_FILE = "repl_history"
#: How long a handle waits for an actor that is being restarted: a crash told from the console
#: is usually followed at once by a look at the restarted actor.
RESTART_WAIT = 3.0


class Backend(Protocol):
    """How handles reach the mesh: directly (in the mesh's process) or over the socket."""

    def tell(self, name: str, message: Any) -> None:
        """Tell actor ``name`` a message."""

    def ask(self, name: str, message: Any, timeout: float) -> Any:
        """Ask actor ``name`` a message; its answer."""

    def tree(self) -> dict[str, Any]:
        """The live tree document (``mycelium tree --json``)."""

    def status(self, app: str | None) -> dict[str, Any]:
        """The status document (``mycelium status --json``)."""

    def node_names(self) -> list[str]:
        """The node agents' registered names (``node-1`` …)."""


class Handle:
    """One mesh actor, found by its registered name on every call.

    Args:
        name: The registered name (``fabric``, ``edge``, ``node-2`` …).
        backend: How to reach it.
    """

    __slots__ = ("_backend", "name")

    def __init__(self, name: str, backend: Backend) -> None:
        self.name = name
        self._backend = backend

    def tell(self, message: Any) -> None:
        """Send ``message`` and return at once (``msg.Crash()`` makes the actor fail).

        Raises:
            OperationFailed: no actor of that name is running (e.g. while it restarts).
        """
        self._backend.tell(self.name, message)

    def ask(self, message: Any, timeout: float = 5.0) -> Any:
        """Send ``message`` and wait up to ``timeout`` seconds for the answer.

        An exception raised by the actor's handler comes back here (the actor keeps running:
        use :meth:`tell` with ``msg.Crash()`` to make it fail).

        Raises:
            OperationFailed: no actor of that name is running, or no answer in time.
        """
        return self._backend.ask(self.name, message, timeout)

    def __repr__(self) -> str:
        return f"<actor {self.name}: .tell(m), .ask(m, timeout=5.0)>"


class TreeView(dict[str, Any]):
    """The tree document (a plain dict to index) that shows itself drawn as a tree."""

    def __repr__(self) -> str:
        return render_tree(self, color=_on_terminal()).rstrip("\n")


class StatusView(dict[str, Any]):
    """The status document (a plain dict to index) that shows itself as ``mycelium status``."""

    def __repr__(self) -> str:
        return render_status(self)


class LocalBackend:
    """Handles inside the mesh's own process (``up --repl``): the actors' refs by name.

    Args:
        mesh: The running :class:`mycelium.mesh.Mesh`.
    """

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    def _call(self, name: str, use: Callable[[pykka.ActorRef[Any]], Any]) -> Any:
        """``use(ref)`` on the actor registered as ``name``, waiting out a restart."""
        deadline = time.monotonic() + RESTART_WAIT
        while True:
            ref = self.mesh.names.get(name)
            if ref is not None:
                with contextlib.suppress(pykka.ActorDeadError):  # it died before handling it
                    return use(ref)
            if time.monotonic() >= deadline:
                raise OperationFailed(f"no actor named {name!r} is running "
                                      f"(still restarting after {RESTART_WAIT:g}s?)")
            time.sleep(0.02)

    def tell(self, name: str, message: Any) -> None:
        """Tell actor ``name`` a message.

        Raises:
            OperationFailed: no such actor is running.
        """
        self._call(name, lambda ref: ref.tell(message))

    def ask(self, name: str, message: Any, timeout: float) -> Any:
        """Ask actor ``name`` a message.

        Raises:
            OperationFailed: no such actor is running or no answer within ``timeout``.
        """
        try:
            return self._call(name, lambda ref: ref.ask(message, timeout=timeout))
        except pykka.Timeout:
            raise OperationFailed(f"{name} did not answer within {timeout:g}s") from None

    def _fabric_op(self, op: Callable[[], Any]) -> dict[str, Any]:
        deadline = time.monotonic() + RESTART_WAIT
        while True:
            try:
                return dict(op())
            except (MyceliumError, pykka.ActorDeadError) as exc:
                restarting = (isinstance(exc, pykka.ActorDeadError) or _restarting(str(exc))
                              or self.mesh.names.get("fabric") is None)
                if not restarting or time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)

    def tree(self) -> dict[str, Any]:
        """The annotated tree, as the control socket's ``tree`` op returns it."""
        return self._fabric_op(self.mesh.ops.tree)  # the control socket's own tree op

    def status(self, app: str | None) -> dict[str, Any]:
        """The status document."""
        return self._fabric_op(lambda: self.mesh.ops.status(app))

    def node_names(self) -> list[str]:
        """The mesh's node names."""
        return list(self.mesh.node_names)


class RemoteBackend:
    """Handles over the control socket (``mycelium repl``); messages cross it as orjson.

    Args:
        client: A client of the mesh's control socket.
    """

    def __init__(self, client: ControlClient) -> None:
        self.client = client

    def tell(self, name: str, message: Any) -> None:
        """Tell actor ``name`` a message (serialised with ``to_wire``).

        Raises:
            NoMesh: the mesh is gone.
            ControlError: no such actor, or the mesh refused the message.
        """
        self._retry(name, lambda: self.client.tell(name, message))

    def ask(self, name: str, message: Any, timeout: float) -> Any:
        """Ask actor ``name``; the answer is turned back into message classes (``from_wire``).

        Raises:
            NoMesh: the mesh is gone.
            ControlError: no such actor, no answer in time, or the handler failed.
        """
        return messages.from_wire(self._retry(name, lambda: self.client.ask(name, message,
                                                                            timeout)))

    def tree(self) -> dict[str, Any]:
        """The tree document."""
        return dict(self._retry("fabric", lambda: self.client.request("tree")))

    def status(self, app: str | None) -> dict[str, Any]:
        """The status document."""
        return dict(self._retry("fabric", lambda: self.client.request("status", app=app)))

    def _retry(self, name: str, call: Callable[[], Any]) -> Any:
        """``call()``, again while actor ``name`` is being restarted (up to RESTART_WAIT)."""
        deadline = time.monotonic() + RESTART_WAIT
        while True:
            try:
                return call()
            except ControlError as exc:
                restarting = (_restarting(str(exc))
                              or name not in self.client.request("names"))
                if not restarting or time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)

    def node_names(self) -> list[str]:
        """The agents' registered names: each one that has a ``<name>/apps`` beside it.

        (``node-N`` on one machine; ``<prefix>-N`` for a member of a multi-machine mesh.)
        """
        names = set(self.client.request("names"))
        return sorted((n for n in names if f"{n}/apps" in names), key=_natural)


def _on_terminal() -> bool:
    """Colours only when the console's output is a terminal."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def _restarting(error: str) -> bool:
    """Whether a mesh error means "that actor is between two lives" (worth a retry)."""
    return (error.startswith("no actor named") or "restarting" in error
            or "ActorDeadError" in error)


def _natural(name: str) -> tuple[str, int]:
    head, _, tail = name.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (name, 0)


def namespace(backend: Backend) -> dict[str, Any]:
    """Exactly the names both consoles promise (:data:`NAMES`), bound to ``backend``."""

    def tree() -> TreeView:
        """The live supervision tree (a dict; shown drawn)."""
        return TreeView(backend.tree())

    def status(app: str | None = None) -> StatusView:
        """The status document, optionally for one app (a dict; shown as a table)."""
        return StatusView(backend.status(app))

    return {
        "__name__": "__console__",
        "__doc__": None,
        "fabric": Handle("fabric", backend),
        "edge": Handle("edge", backend),
        "nodes": {name: Handle(name, backend) for name in backend.node_names()},
        "msg": messages,
        "tree": tree,
        "status": status,
    }


def banner(where: str, leaving: str) -> str:
    """The console's first lines: what it is connected to, its names, how to leave."""
    return (f"mycelium REPL ({where})\n"
            f"  names: {', '.join(NAMES)}\n"
            f"  fabric.ask(msg.GetInfo())   nodes['node-1'].tell(msg.Crash())   tree()\n"
            f"  {leaving}")


def run_attached(home: Home) -> None:
    """``mycelium repl``: a console on the mesh of ``home``, over its control socket.

    Raises:
        NoMesh: no mesh runs on ``home``.
    """
    client = ControlClient(home)
    names = namespace(RemoteBackend(client))  # fails with NoMesh before any prompt
    text = banner(f"attached to {home.root}",
                  "Ctrl-D (or exit()) detaches; the mesh keeps running.")
    interact(names, text, home.root / HISTORY_FILE)


def _nothing() -> None:
    return None


def _wake_main_on_sigint(state: PromptState) -> Callable[[], None]:
    """Make Ctrl-C reach a main thread that waits in readline; returns the undo.

    The kernel may deliver SIGINT to any of the mesh's threads: Python then runs its handler
    in the main thread, but only once that thread wakes up, and readline waits in ``select``
    until a key is pressed. The signal's wakeup fd tells a helper thread, which pokes the main
    thread with SIGUSR2 (a no-op handler): ``select`` is interrupted and the handler runs.
    """
    main = threading.get_ident()
    stop = threading.Event()
    poking = threading.Lock()
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    old_usr2 = signal.signal(signal.SIGUSR2, lambda *_: None)

    def pump() -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGINT in data:
                poke()

    def poke() -> None:
        # A signal that lands just before readline enters select() is only seen at the next
        # interruption: poke until the console has moved on from this prompt (or 1 s passed).
        generation = state.generation
        for _ in range(20):
            with poking:  # never after undo(): SIGUSR2's default action ends the process
                if stop.is_set():
                    return
                with contextlib.suppress(OSError):
                    signal.pthread_kill(main, signal.SIGUSR2)
            if stop.wait(0.05) or not state.at_prompt or state.generation != generation:
                return

    threading.Thread(target=pump, name="repl-sigint", daemon=True).start()

    def undo() -> None:
        with poking:
            stop.set()
        signal.set_wakeup_fd(old_fd)
        # a poke still in flight must not meet SIGUSR2's default action (ending the process)
        keep = old_usr2 if old_usr2 not in (signal.SIG_DFL, None) else signal.SIG_IGN
        signal.signal(signal.SIGUSR2, keep)
        with contextlib.suppress(OSError):
            reader.shutdown(socket.SHUT_RDWR)
        writer.close()
        reader.close()

    return undo


def run_in_process(mesh: Mesh, out: Callable[[str], None] | None = None) -> None:
    """``mycelium up --repl``: a console in the mesh's process, then wait for the mesh's end.

    Runs in the main thread so that Ctrl-C at the prompt cancels the line, as in Python's own
    console. Leaving the console (Ctrl-D) does not stop the mesh: ``up`` stays in the foreground
    until Ctrl-C, SIGTERM or ``mycelium down``. If the mesh stops while the console is open
    (``down`` from elsewhere), the console ends too.

    Args:
        mesh: The running :class:`mycelium.mesh.Mesh` (``names``, ``stopped``, ``home``).
        out: Where the closing note goes (default: stdout).
    """
    say = out or (lambda text: print(text, flush=True))
    names = namespace(LocalBackend(mesh))
    state = PromptState()
    main = threading.main_thread().ident
    in_main = threading.get_ident() == main
    left = threading.Event()

    def wake_console() -> None:
        mesh.stopped.wait()
        if not left.is_set() and in_main and main is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pthread_kill(main, signal.SIGINT)

    def on_sigint(_signum: int, _frame: Any) -> None:
        if mesh.stopped.is_set():
            raise LeaveConsole
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT) if in_main else None
    undo_forward: Callable[[], None] = _nothing
    if in_main:
        signal.signal(signal.SIGINT, on_sigint)
        undo_forward = _wake_main_on_sigint(state)
    threading.Thread(target=wake_console, name="repl-wake", daemon=True).start()
    readline_mod: Any = None
    with contextlib.suppress(ImportError):
        import readline

        readline_mod = readline
    streams = (sys.stdout, sys.stderr)
    sys.stdout = PromptSafeStream(streams[0], state, readline_mod)
    sys.stderr = PromptSafeStream(streams[1], state, readline_mod)
    root = Path(mesh.home.root)
    text = banner(f"in the mesh, home {root}",
                  "Ctrl-D leaves the console; the mesh keeps running until Ctrl-C, SIGTERM or "
                  "`mycelium down`.")
    try:
        with contextlib.suppress(LeaveConsole):
            interact(names, text, root / HISTORY_FILE, state, mesh.stopped.is_set)
    finally:
        left.set()
        sys.stdout, sys.stderr = streams
        if in_main:
            undo_forward()
            signal.signal(signal.SIGINT, previous)
    if not mesh.stopped.is_set():
        say(f"console closed; the mesh keeps running (stop it with Ctrl-C or "
            f"`mycelium down --home {root}`)")
    while not mesh.stopped.wait(0.5):
        pass
