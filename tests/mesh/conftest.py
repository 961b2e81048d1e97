"""Fixtures for the mesh tests: published spores (once per session) and a fresh home per mesh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mesh_helpers import REPO, MeshProcess

from mycelium.home import Home
from mycelium.spores import keygen, publish
from tests.meshkit import private_home, stopped_cleanly

TESTER = Path(__file__).resolve().parent / "workloads" / "tester"
HELLO = REPO / "examples" / "hello" / "hello"


@pytest.fixture(scope="session")
def spores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A template home with a key and every test spore published; returns (root, digests)."""
    root = tmp_path_factory.mktemp("template") / "home"
    home = Home(root).ensure()
    keygen(home)
    manifests = {
        "hello": (HELLO, {"name": "hello", "version": "1.0.0"}),
        "hello-v2": (HELLO, {"name": "hello", "version": "2.0.0",
                             "env": {"HELLO_VERSION": "2.0.0"}}),
        "hello-bad": (TESTER, {"name": "hello", "version": "3.0.0",
                               "env": {"TESTER_MODE": "unhealthy"}}),
        "tester": (TESTER, {"name": "tester", "version": "1.0.0"}),
        "flaky": (TESTER, {"name": "flaky", "version": "1.0.0",
                           "env": {"TESTER_MODE": "flaky", "TESTER_HEALTHY_FOR": "0.5"}}),
        "hog": (TESTER, {"name": "hog", "version": "1.0.0",
                         "env": {"TESTER_MODE": "hog", "TESTER_MB": "200"}}),
    }
    digests = {key: publish(home, binary=binary, manifest=manifest)
               for key, (binary, manifest) in manifests.items()}
    return root, digests


@pytest.fixture
def home(tmp_path: Path, spores: tuple[Path, dict[str, str]]) -> Iterator[Path]:
    """A private copy of the template home; no workload of it may survive the test."""
    yield from private_home(spores[0], tmp_path / "home")


@pytest.fixture
def digests(spores: tuple[Path, dict[str, str]]) -> dict[str, str]:
    """The published digests by key (hello, hello-v2, hello-bad, tester, hog)."""
    return spores[1]


@pytest.fixture
def mesh(home: Path) -> Iterator[MeshProcess]:
    """A running 3-node mesh on its own home and edge port; stopped and checked afterwards."""
    proc = MeshProcess(home)
    with stopped_cleanly(proc, home):
        yield proc
