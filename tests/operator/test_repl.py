"""The mesh's console (docs/reference.md#repl) driven through a real pseudo-terminal, in both forms.

``mycelium repl`` attaches to a running ``mycelium up`` through the control socket;
``mycelium up --repl`` runs the console inside the mesh. Both offer fabric, edge, nodes, msg,
tree() and status(); a crash told from the console shows in the supervision log; leaving the
console never stops the mesh.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mycelium.home import Home
from mycelium.operator import SupervisionLog
from mycelium.operator.client import ControlClient
from mycelium.spores import keygen, publish

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p), "TERM": "xterm"}
ENV.pop("MYCELIUM_HOME", None)
PROMPT = ">>> "


def _controlling_terminal() -> None:
    """In the child, after setsid: make the pty its terminal, so Ctrl-C sends SIGINT."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A command on a real pseudo-terminal: what it prints is collected, keys are typed."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=ENV,
                                     start_new_session=True, cwd=REPO,
                                     preexec_fn=_controlling_terminal)
        os.close(slave)
        self.out = b""
        self.pos = 0
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self._cond.notify_all()
                    return
                self.out += data
                self._cond.notify_all()

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[bytes]:
        """Wait for ``pattern`` (a regex) after what was matched before; return the match."""
        rx = re.compile(pattern.encode())
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = rx.search(self.out, self.pos)
                if found:
                    self.pos = found.end()
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} within {timeout}s; the terminal "
                                         f"shows: {self.out[self.pos:][-3000:]!r}")
                self._cond.wait(left)

    def type(self, text: str) -> None:
        """Type ``text`` (include ``\\n`` to press Enter)."""
        os.write(self.master, text.encode())

    def run(self, line: str, timeout: float = 15.0) -> str:
        """Type one line, wait for the next prompt; what the console printed in between."""
        start = self.pos
        self.type(line + "\n")
        self.expect(re.escape(PROMPT), timeout)
        shown = self.out[start:self.pos].decode(errors="replace")
        return re.sub("\x1b\\[[0-9;]*m", "", shown)  # colours off: the text is what counts

    def close(self) -> None:
        """Kill what is left and free the terminal."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        with contextlib.suppress(OSError):
            os.close(self.master)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``predicate`` until truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def mycelium(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """One CLI run against ``home``."""
    return subprocess.run([sys.executable, "-m", "mycelium", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout, env=ENV, check=False)


def restarted(home: Path, child: str, after: int) -> bool:
    """The supervision log shows ``child`` terminated and restarted (after record ``after``)."""
    records = list(SupervisionLog(home).read())[after:]
    events = [(r["event"], r.get("reason")) for r in records if r.get("child") == child]
    return ("child_terminated", "crash requested") in events and any(
        e == "child_restarted" for e, _ in events)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A home with a key and the hello spore published, copied by each test."""
    root = tmp_path_factory.mktemp("repl-template") / "home"
    keygen(Home(root).ensure())
    digest = publish(Home(root), binary=HELLO / "hello", manifest=HELLO / "manifest.json")
    return root, digest


@pytest.fixture
def home(tmp_path: Path, template: tuple[Path, str]) -> Iterator[Path]:
    """A private copy of the template home; any mesh left on it is stopped afterwards."""
    target = tmp_path / "home"
    shutil.copytree(template[0], target, symlinks=True)
    yield target
    if (target / "control.sock").exists():
        mycelium(target, "down", timeout=60)


@pytest.mark.timeout(60)
def test_an_attached_repl_pokes_the_mesh_and_leaving_it_keeps_the_mesh(
        home: Path, template: tuple[Path, str]) -> None:
    up = subprocess.Popen([sys.executable, "-m", "mycelium", "up", "--home", str(home),
                           "--nodes", "2", "--edge-port", "0"], env=ENV, cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    term: Terminal | None = None
    try:
        client = ControlClient(Home(home))
        wait_for(lambda: up.poll() is None and _answers(client), 20, "the mesh")
        deployed = mycelium(home, "deploy", "hello", template[1], "--max", "2")
        assert deployed.returncode == 0, deployed.stderr

        term = Terminal([sys.executable, "-m", "mycelium", "repl", "--home", str(home)])
        term.expect("fabric, edge, nodes, msg, tree\\(\\), status\\(\\)")
        term.expect("Ctrl-D")
        term.expect(re.escape(PROMPT))

        assert "['edge', 'fabric', 'msg', 'nodes', 'status', 'tree']" in term.run(
            "sorted(k for k in dir() if not k.startswith('_'))")  # exactly the documented names
        before_tree = term.pos
        shown = term.run("tree()")
        assert b"\x1b[1mfabric" in term.out[before_tree:]  # drawn in colour on a terminal
        for part in ("mesh  supervisor one_for_one", "fabric  worker  running",
                     "node-2  supervisor rest_for_one", "hello@node-1:", "Ready  pid "):
            assert part in shown, shown
        assert "hello  running" in term.run("status()")
        assert "'name': 'fabric'" in term.run("fabric.ask(msg.GetInfo())")
        assert "<actor node-1" in term.run("nodes")
        assert "node-2" in term.run("nodes['node-2'].ask(msg.GetInfo(), timeout=5)")
        assert "error: " in term.run("fabric.ask(msg.Crash())")  # an ask gets the failure back
        assert "hello" in term.run("status()['apps'][0]['app']")

        before = len(list(SupervisionLog(home).read()))
        term.run("fabric.tell(msg.Crash())")
        # the same handle reaches the restarted fabric: a handle waits out a restart
        assert "'name': 'fabric'" in term.run("fabric.ask(msg.GetInfo())")
        term.run("edge.tell(msg.Crash())")
        assert "fabric  worker  running" in term.run("tree()")
        wait_for(lambda: restarted(home, "fabric", before) and restarted(home, "edge", before),
                 15, "the fabric's and the edge's restarts in the log")

        term.type("\x04")  # Ctrl-D detaches
        assert term.proc.wait(15) == 0
        assert up.poll() is None
        assert _answers(client)
        assert "tree()" in (home / "repl_history").read_text()
    finally:
        if term is not None:
            term.close()
        if up.poll() is None:
            mycelium(home, "down")
        assert up.wait(60) == 0


def _answers(client: ControlClient) -> bool:
    try:
        client.request("names", timeout=2)
    except Exception:
        return False
    return True


@pytest.mark.timeout(60)
def test_up_repl_runs_the_console_in_the_mesh_and_ctrl_d_keeps_it_running(home: Path) -> None:
    term = Terminal([sys.executable, "-m", "mycelium", "up", "--repl", "--home", str(home),
                     "--nodes", "1", "--edge-port", "0"])
    try:
        term.expect("mesh up: edge http://127.0.0.1:")
        term.expect("Ctrl-D leaves the console; the mesh keeps running")
        term.expect(re.escape(PROMPT))
        assert "node-1  supervisor rest_for_one" in term.run("tree()")
        assert "nodes: node-1 up" in term.run("status()")
        assert "'name'" in term.run("nodes['node-1'].ask(msg.GetInfo())")
        assert "edge" in term.run("edge")

        # a crash told from the console: the log line lands above a redrawn prompt that still
        # holds what was being typed
        term.type("fabric.tell(msg.Crash())\n")
        term.expect(re.escape(PROMPT))
        term.type("1 + ")
        line = term.expect("\r\x1b\\[K[^\r\n]* mesh [^\r\n]*child_restarted[^\r\n]* fabric "
                           "restarts=1\r?\n").group(0)
        assert b"\x1b[32mchild_restarted" in line  # colours: the console is a terminal
        term.expect(re.escape(PROMPT + "1 + "))
        assert "42" in term.run("41")  # the typed line was kept: 1 + 41

        term.type("\x03")  # Ctrl-C at the prompt cancels the line, not the mesh
        term.expect("KeyboardInterrupt")
        term.expect(re.escape(PROMPT))

        term.type("\x04")  # Ctrl-D leaves the console; the mesh stays in the foreground
        term.expect("console closed; the mesh keeps running")
        assert term.proc.poll() is None
        assert _answers(ControlClient(Home(home)))

        down = mycelium(home, "down")
        assert down.returncode == 0, down.stderr
        term.expect("mesh down")
        assert term.proc.wait(30) == 0
    finally:
        term.close()


@pytest.mark.timeout(60)
def test_up_repl_ends_when_the_mesh_is_stopped_from_outside(home: Path) -> None:
    term = Terminal([sys.executable, "-m", "mycelium", "up", "--repl", "--home", str(home),
                     "--nodes", "1", "--edge-port", "0"])
    try:
        term.expect(re.escape(PROMPT))
        term.type("fab")  # half a line typed when `down` arrives
        assert mycelium(home, "down").returncode == 0
        term.expect("mesh down")
        assert term.proc.wait(30) == 0
    finally:
        term.close()


@pytest.mark.timeout(30)
def test_repl_without_a_mesh_is_one_error_line(tmp_path: Path) -> None:
    result = mycelium(tmp_path / "nothing", "repl")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no mesh running at ")
    assert "Traceback" not in result.stderr
