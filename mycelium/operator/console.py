"""The terminal side of the mesh's console: prompt, readline, and log lines above the prompt.

:mod:`mycelium.operator.repl` decides what the console offers; this module only runs a
:class:`code.InteractiveConsole` well on a terminal:

- readline history (kept in a file) and Tab completion over the console's names;
- other threads' output (the supervision log in ``up --repl``) is printed above a waiting
  prompt, and the prompt with what was typed so far is drawn again, so the input line is never
  garbled;
- a mesh error is shown as one ``error: …`` line, not a traceback.
"""

from __future__ import annotations

import code
import contextlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import pykka

from mycelium.errors import MyceliumError

__all__ = ["HISTORY_LENGTH", "LeaveConsole", "MeshConsole", "PromptSafeStream", "PromptState",
           "interact"]

HISTORY_LENGTH = 1000


class PromptState:
    """Whether the console waits at its prompt, and with which prompt (shared with streams)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at_prompt = False
        self.prompt = ""
        self.owner = threading.get_ident()
        self.pending: dict[int, str] = {}
        #: Counts the prompts shown: tells whether the console moved on since some moment.
        self.generation = 0


class PromptSafeStream:
    """Wraps stdout/stderr: other threads' lines go above a waiting prompt, which is redrawn.

    ``input()`` keeps using readline because ``fileno()``/``isatty()`` are the real stream's.
    """

    def __init__(self, stream: TextIO, state: PromptState, readline: Any) -> None:
        self._stream = stream
        self._state = state
        self._readline = readline

    def write(self, text: str) -> int:
        state = self._state
        if threading.get_ident() == state.owner or not state.at_prompt:
            return self._stream.write(text)
        with state.lock:
            ident = threading.get_ident()
            *lines, rest = (state.pending.pop(ident, "") + text).split("\n")
            if rest:
                state.pending[ident] = rest
            if lines and state.at_prompt:
                typed = self._readline.get_line_buffer() if self._readline else ""
                out = "".join(f"\r\x1b[K{line}\n" for line in lines)
                self._stream.write(out + state.prompt + typed)
                self._stream.flush()
            elif lines:
                self._stream.write("".join(f"{line}\n" for line in lines))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class LeaveConsole(SystemExit):
    """Ends the console from outside (``up --repl``: the mesh stopped under it)."""


class MeshConsole(code.InteractiveConsole):
    """An :class:`code.InteractiveConsole` that knows the prompt and shows mesh errors briefly.

    Args:
        names: The console's namespace (see :func:`namespace`).
        state: Shared with the prompt-safe streams.
        should_leave: Checked before each prompt; true ends the console.
    """

    def __init__(self, names: dict[str, Any], state: PromptState | None = None,
                 should_leave: Callable[[], bool] = lambda: False) -> None:
        super().__init__(names, filename="<mycelium>")
        self.state = state or PromptState()
        self.should_leave = should_leave

    def raw_input(self, prompt: str = "") -> str:
        """Read a line, flagging the prompt as waiting so log lines go above it.

        Raises:
            LeaveConsole: ``should_leave()`` is true.
            EOFError: Ctrl-D.
        """
        if self.should_leave():
            raise LeaveConsole
        state = self.state
        with state.lock:
            state.prompt, state.at_prompt = prompt, True
            state.generation += 1
        try:
            return input(prompt)
        finally:
            with state.lock:
                state.at_prompt = False

    def showtraceback(self) -> None:
        """A mesh error is one ``error: …`` line; anything else gets Python's traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, MyceliumError | pykka.Timeout | pykka.ActorDeadError):
            self.write(f"error: {exc}\n")
            return
        super().showtraceback()


def _setup_readline(names: dict[str, Any], history: Path | None) -> Any:
    """Tab completion over ``names``, history from ``history``; the readline module, or None.

    Only on a terminal: piped input (scripts, tests) gets a plain console and no history.
    """
    if not sys.stdin.isatty():
        return None
    try:
        import readline
        import rlcompleter
    except ImportError:  # a Python built without readline: a plain console
        return None
    readline.set_completer(rlcompleter.Completer(names).complete)
    readline.parse_and_bind("tab: complete")
    readline.set_history_length(HISTORY_LENGTH)
    if history is not None:
        with contextlib.suppress(OSError):
            readline.clear_history()
            readline.read_history_file(history)
    return readline


def _save_history(readline: Any, history: Path | None) -> None:
    if readline is None or history is None:
        return
    with contextlib.suppress(OSError):
        readline.write_history_file(history)
        history.chmod(0o600)


def interact(names: dict[str, Any], text: str, history: Path | None,
              state: PromptState | None = None,
              should_leave: Callable[[], bool] = lambda: False) -> None:
    """Run one console until Ctrl-D, ``exit()`` or ``should_leave``; keep the history.

    Args:
        names: The console's namespace.
        text: The banner.
        history: The readline history file (read first, written at the end), or None.
        state: Shared with :class:`PromptSafeStream` wrappers, if any.
        should_leave: Checked before each prompt.
    """
    readline = _setup_readline(names, history)
    console = MeshConsole(names, state, should_leave)
    try:
        with contextlib.suppress(SystemExit):
            console.interact(banner=text, exitmsg="")
    finally:
        _save_history(readline, history)


