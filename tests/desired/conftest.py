"""Fixtures for the desired-state tests: a template home with a signing key (``apply`` packs
and publishes itself), the mesh helpers of tests/mesh, and files of example apps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "mesh"))

from mesh_helpers import home, mesh  # noqa: E402, F401  (shared fixtures)

from mycelium.home import Home  # noqa: E402
from mycelium.spores import keygen  # noqa: E402

EXAMPLES = HERE.parents[1] / "examples"


@pytest.fixture(scope="session")
def spores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A template home with the default key and no spore: what ``apply`` starts from."""
    root = tmp_path_factory.mktemp("template") / "home"
    keygen(Home(root).ensure())
    return root, {}
