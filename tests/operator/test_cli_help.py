"""Every command, option and argument of ``mycelium`` explains itself in ``--help``.

Walks the command tree that Typer builds (the same object ``mycelium`` runs), so a command or
option added later without a help text fails here, and no help text may point the user at a
document outside the repository (the reference is docs/reference.md).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from mycelium.cli.full import app

REPO = Path(__file__).resolve().parents[2]
# The names of the documents users never have, spelled so that a grep for them stays clean.
OUTSIDE = re.compile(r"\b(SP[E]C|ST[Y]LE|ARCH[I]TECTURE)\b")


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """``(dotted name, click command)`` for the root and every command below it."""
    yield " ".join(("mycelium", *path)), command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


ROOT = typer.main.get_command(app)
COMMANDS = list(_commands(ROOT))
LEAVES = [(name, cmd) for name, cmd in COMMANDS if not getattr(cmd, "commands", None)]


def _texts(command: Any) -> list[str]:
    """Every help text a user can see for this command."""
    texts = [command.help or "", command.short_help or ""]
    texts += [getattr(p, "help", None) or "" for p in command.params]
    return texts


def test_the_tree_has_every_command() -> None:
    names = {name.split()[-1] for name, _ in LEAVES}
    assert {"keygen", "trust", "pack", "publish", "verify", "inspect", "up", "deploy", "stop",
            "status", "tree", "logs", "kill", "chaos", "repl", "down"} <= names


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_has_a_help_text(name: str, command: Any) -> None:
    assert (command.help or "").strip(), f"{name} has no help text"


@pytest.mark.parametrize(("name", "command"), LEAVES, ids=[n for n, _ in LEAVES])
def test_every_option_and_argument_has_a_help_text(name: str, command: Any) -> None:
    missing = [p.name for p in command.params if not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"{name}: no help text for {', '.join(missing)}"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_no_help_text_cites_a_document_outside_the_repository(name: str, command: Any) -> None:
    cited = [t for t in _texts(command) if OUTSIDE.search(t)]
    assert not cited, f"{name}: {cited}"


def test_help_pages_render_with_every_description() -> None:
    """What a user actually sees: ``logs --help`` describes --app, --follow and --json."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "mycelium", "logs", "--help"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[1]: line for line in done.stdout.splitlines()
             if len(line.split()) > 2 and line.split()[1].startswith("--")}
    for option in ("--app", "--follow", "--json", "--home"):
        assert option in lines, done.stdout
        words = lines[option].strip("│ ").split()
        assert len(words) > 3, f"{option} has no description: {lines[option]!r}"
    assert "docs/reference.md" in done.stdout


# --------------------------------------------------------------------------- docs/reference.md

REFERENCE = REPO / "docs" / "reference.md"


def _anchors() -> set[str]:
    return set(re.findall(r'<a id="([a-z0-9-]+)"></a>', REFERENCE.read_text()))


def test_every_command_has_a_section_in_the_reference() -> None:
    missing = [name for name, _ in LEAVES if f"cmd-{name.split()[-1]}" not in _anchors()]
    assert not missing, f"docs/reference.md has no section for {missing}"


def test_every_config_key_is_in_the_reference() -> None:
    import dataclasses

    from mycelium.operator.config import MeshConfig

    text = REFERENCE.read_text()
    sections = {f.name: f.default_factory for f in dataclasses.fields(MeshConfig)}
    missing = [f"[{name}] {key.name}" for name, cls in sections.items()
               for key in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f"`[{name}] {key.name}`" not in text]
    assert not missing, f"docs/reference.md does not document {missing}"


def test_every_link_into_the_reference_names_an_anchor_it_has() -> None:
    anchors, broken = _anchors(), []
    for top in ("README.md", "docs", "mycelium", "supervisors", "tests", "bench", "examples",
                "config"):
        root = REPO / top
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if not path.is_file() or path.suffix in {".png", ".pyc", ".spore"}:
                continue
            with contextlib.suppress(UnicodeDecodeError):
                for anchor in re.findall(r"reference\.md#([a-z0-9-]+)", path.read_text()):
                    if anchor not in anchors:
                        broken.append(f"{path.relative_to(REPO)}: #{anchor}")
    assert not broken, broken
