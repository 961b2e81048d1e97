"""Fixtures for the isolation tests: published spores (once per session), a fresh home per mesh,
and the mesh helpers of tests/mesh."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "mesh"))
sys.path.insert(0, str(HERE))

from mesh_helpers import digests, home, mesh  # noqa: E402, F401  (shared fixtures)

from tests.meshkit import published  # noqa: E402

PROBE = HERE / "workloads" / "probe"
ESCAPER = HERE / "workloads" / "escaper"

CONFIG = """\
[instance]
stop_grace = 1.0
health_interval = 0.2
[restart]
backoff_base = 0.05
"""


@pytest.fixture(scope="session")
def spores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A template home with a key, a small config and the isolation spores published."""
    root = tmp_path_factory.mktemp("isotemplate") / "home"
    return root, published(root, {
        "probe": (PROBE, {"name": "probe", "version": "1", "env": {"FROM_MANIFEST": "yes"}}),
        "other": (PROBE, {"name": "other", "version": "1"}),
        "escaper": (ESCAPER, {"name": "escaper", "version": "1"}),
        "escaper-v2": (ESCAPER, {"name": "escaper", "version": "2",
                                 "env": {"ESCAPER_VERSION": "2"}}),
    }, CONFIG)
