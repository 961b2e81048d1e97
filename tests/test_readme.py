"""The README's quick start and guided tour, run for real, block by block, in order.

The quick start block's ``pip install`` lines are skipped (the package is installed already)
and so is its ``pytest`` line (this test is part of that run): what remains is
``./examples/quickstart.sh``, which starts the mesh. Every ``bash`` block of the tour then runs
as it is, in its own ``bash -euo pipefail``, with two substitutions only: the edge port 8080
becomes a free port, and the home is a temporary directory (``MYCELIUM_HOME``). The ``pycon``
block's ``>>>`` lines are typed into ``mycelium repl``. Each must exit 0 without a traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of each fenced block, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```", text, re.S | re.M)


def quick_start_commands(readme: str) -> list[str]:
    """The commands of the first block (above every section), without install and test lines."""
    head = readme[:readme.index("<!-- section:")]
    lang, body = _blocks(head)[0]
    assert lang == "bash"
    commands = []
    for line in body.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split("&&")]
        kept = [p for p in parts if not p.startswith("pip install") and "pytest" not in p]
        if kept:
            commands.append(" && ".join(kept))
    return commands


def tour_blocks(readme: str) -> list[tuple[str, str]]:
    """The fenced blocks of the tour section."""
    start = readme.index("<!-- section:tour -->")
    end = readme.index("<!-- /section:tour -->")
    return _blocks(readme[start:end])


def test_the_readme_has_a_quick_start_and_a_tour() -> None:
    readme = README.read_text()
    assert quick_start_commands(readme) == ["./examples/quickstart.sh"]
    kinds = [lang for lang, _ in tour_blocks(readme)]
    assert kinds.count("bash") >= 5 and kinds.count("pycon") == 1


@pytest.mark.timeout(90)
def test_every_quick_start_and_tour_command_runs(tmp_path: Path) -> None:
    readme = README.read_text()
    home = tmp_path / "home"
    port = str(_free_port())
    env = {**os.environ, "MYCELIUM_HOME": str(home), "EDGE_PORT": port,
           "PYTHONPATH": os.pathsep.join(
               p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("MYCELIUM_DEBUG", None)

    def run(what: str, argv: list[str], stdin: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(argv, cwd=REPO, env=env, input=stdin, capture_output=True,
                                text=True, timeout=timeout, check=False)
        shown = f"{what}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        assert result.returncode == 0, shown
        assert "Traceback" not in result.stdout + result.stderr, shown
        return result

    try:
        for command in quick_start_commands(readme):
            run(command, ["bash", "-euo", "pipefail", "-c", command])
        for lang, body in tour_blocks(readme):
            if lang == "bash":
                script = body.replace("8080", port)
                run(script, ["bash", "-euo", "pipefail", "-c", script])
            elif lang == "pycon":
                typed = [line[4:] for line in body.splitlines() if line.startswith(">>> ")]
                result = run("\n".join(typed), ["mycelium", "repl"],
                             stdin="\n".join(typed) + "\n")
                assert "error:" not in result.stdout + result.stderr, result.stderr
        assert not (home / "control.sock").exists(), "the tour ends with `mycelium down`"
    finally:
        _stop_everything(home, env)


def _stop_everything(home: Path, env: dict[str, str]) -> None:
    """Whatever happened: no mesh and no workload of this home may outlive the test."""
    if (home / "control.sock").exists():
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(["mycelium", "down"], env=env, capture_output=True, timeout=60,
                           check=False)
    marker = str(home)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = []
        for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
            with contextlib.suppress(psutil.Error, TypeError):
                if any(marker in part for part in proc.info["cmdline"] or ()) or (
                        (proc.info["environ"] or {}).get("MYCELIUM_HOME") == marker):
                    left.append(proc)
        if not left:
            return
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(left, timeout=2)
    raise AssertionError(f"processes of {home} survived the test")
