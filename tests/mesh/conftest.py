"""Fixtures for the mesh tests: published spores (once per session) and a fresh home per mesh."""

from __future__ import annotations

from pathlib import Path

import pytest
from mesh_helpers import HELLO_SPORES, TESTER, digests, home, mesh  # noqa: F401  (shared fixtures)

from tests.meshkit import published


@pytest.fixture(scope="session")
def spores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A template home with a key and every test spore published; returns (root, digests)."""
    root = tmp_path_factory.mktemp("template") / "home"
    return root, published(root, {
        **HELLO_SPORES,
        "hello-bad": (TESTER, {"name": "hello", "version": "3.0.0",
                               "env": {"TESTER_MODE": "unhealthy"}}),
        "tester": (TESTER, {"name": "tester", "version": "1.0.0"}),
        "flaky": (TESTER, {"name": "flaky", "version": "1.0.0",
                           "env": {"TESTER_MODE": "flaky", "TESTER_HEALTHY_FOR": "0.5"}}),
        "hog": (TESTER, {"name": "hog", "version": "1.0.0",
                         "env": {"TESTER_MODE": "hog", "TESTER_MB": "200"}}),
    })
