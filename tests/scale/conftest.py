"""Fixtures for the scale tests: hello published once per session, a fresh home per mesh."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "mesh"))

from mesh_helpers import (  # noqa: E402,F401  (shared fixtures)
    HELLO_SPORES,
    TESTER,
    digests,
    home,
    mesh,
)

from tests.meshkit import published  # noqa: E402


@pytest.fixture(scope="session")
def spores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A template home with a key and hello (v1, v2) published; returns (root, digests)."""
    root = tmp_path_factory.mktemp("template") / "home"
    return root, published(root, {
        **HELLO_SPORES,
        "sleepy": (TESTER, {"name": "sleepy", "version": "1.0.0",
                            "env": {"TESTER_MODE": "unhealthy"}}),
    })
