"""Fixtures for the reliability tests: published spores (once per session), a fresh home with a
small config per mesh, and the mesh helpers of tests/mesh."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "mesh"))
sys.path.insert(0, str(HERE))

from mesh_helpers import digests, home, mesh  # noqa: E402, F401  (shared fixtures)

from tests.meshkit import published  # noqa: E402

REL = HERE / "workloads" / "rel"
SLOW_START = HERE.parents[1] / "examples" / "slow-start" / "slow-start"

CONFIG = """\
[instance]
stop_grace = 2.0
health_interval = 0.2
[restart]
backoff_base = 0.1
backoff_cap = 30.0
backoff_jitter = 0.1
reset_after = 10.0
intensity = 50
period = 30.0
[rollout]
parallel = 1
"""


@pytest.fixture(scope="session")
def spores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A template home with a key, the test config and every test spore published."""
    root = tmp_path_factory.mktemp("reltemplate") / "home"
    variants = {
        "v1": ("web", {"REL_VERSION": "1"}),
        "v2": ("web", {"REL_VERSION": "2"}),
        "v3": ("web", {"REL_VERSION": "3"}),
        "bad": ("web", {"REL_VERSION": "bad", "REL_MODE": "unhealthy"}),
        "stubborn": ("web", {"REL_VERSION": "stubborn", "REL_MODE": "stubborn"}),
        "erring": ("web", {"REL_VERSION": "erring", "REL_MODE": "errors"}),
        "crashy": ("crashy", {"REL_MODE": "crash"}),
        "steady": ("steady", {"REL_VERSION": "steady"}),
    }
    spores: dict[str, tuple[Path, dict[str, Any]]] = {
        key: (REL, {"name": name, "version": f"1.0.{k}", "env": env})
        for k, (key, (name, env)) in enumerate(variants.items())}
    spores["slow"] = (SLOW_START, {"name": "slow", "version": "1.0.0",
                                   "env": {"START_DELAY": "3"}})
    return root, published(root, spores, CONFIG)
