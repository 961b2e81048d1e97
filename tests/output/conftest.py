"""Fixtures for the workload-output tests: published spores (once per session), a fresh home per
mesh, and the mesh helpers of tests/mesh."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "mesh"))
sys.path.insert(0, str(HERE))

from mesh_helpers import REPO, digests, home, mesh  # noqa: E402, F401  (shared fixtures)

from mycelium.home import Home  # noqa: E402
from mycelium.spores import keygen, publish  # noqa: E402

CHATTY = HERE / "workloads" / "chatty"
CRASHY = REPO / "examples" / "crashy" / "crashy"


@pytest.fixture(scope="session")
def spores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A template home with a key and the test spores published; returns (root, digests)."""
    root = tmp_path_factory.mktemp("template") / "home"
    template = Home(root).ensure()
    keygen(template)
    manifests = {
        "chatty": (CHATTY, {"name": "chatty", "version": "1.0.0"}),
        "burst": (CHATTY, {"name": "burst", "version": "1.0.0",
                           "env": {"CHATTY_BURST": "60000", "CHATTY_INTERVAL": "0.02"}}),
        "crashy": (CRASHY, {"name": "crashy", "version": "1.0.0"}),
    }
    published = {key: publish(template, binary=binary, manifest=manifest)
                 for key, (binary, manifest) in manifests.items()}
    return root, published
