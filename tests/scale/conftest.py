"""Fixtures for the scale tests: hello published once per session, a fresh home per mesh."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "mesh"))

from mesh_helpers import REPO, digests, home, mesh  # noqa: E402,F401  (shared fixtures)

from tests.meshkit import published  # noqa: E402

HELLO = REPO / "examples" / "hello" / "hello"
TESTER = HERE.parent / "mesh" / "workloads" / "tester"


@pytest.fixture(scope="session")
def spores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A template home with a key and hello (v1, v2) published; returns (root, digests)."""
    root = tmp_path_factory.mktemp("template") / "home"
    return root, published(root, {
        "hello": (HELLO, {"name": "hello", "version": "1.0.0"}),
        "hello-v2": (HELLO, {"name": "hello", "version": "2.0.0",
                             "env": {"HELLO_VERSION": "2.0.0"}}),
        "sleepy": (TESTER, {"name": "sleepy", "version": "1.0.0",
                            "env": {"TESTER_MODE": "unhealthy"}}),
    })
