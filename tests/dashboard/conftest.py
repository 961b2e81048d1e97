"""Fixtures for the dashboard tests: one 3-node mesh serving hello, one headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dash_helpers import (
    REPO,
    MeshWithDashboard,
    chromium_or_skip,
    cli,
    start_browser,
)

from mycelium.home import Home
from mycelium.spores import keygen, publish
from tests.meshkit import stopped_cleanly

HELLO = REPO / "examples" / "hello" / "hello"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshWithDashboard]:
    """A running 3-node mesh with its dashboard and ``hello`` deployed on every node
    (``mesh.digests``: ``hello`` and ``hello-v2``)."""
    root = tmp_path_factory.mktemp("dash") / "home"
    home = Home(root).ensure()
    keygen(home)
    digest = publish(home, binary=HELLO, manifest={"name": "hello", "version": "1.0.0"})
    v2 = publish(home, binary=HELLO, manifest={"name": "hello", "version": "2.0.0"})
    proc = MeshWithDashboard(root)
    proc.digests = {"hello": digest, "hello-v2": v2}
    with stopped_cleanly(proc, root):
        done = cli(root, "deploy", "hello", digest, "--max", "3", "--timeout", "30")
        assert done.returncode == 0, done.stderr
        yield proc


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module; its profile directory is removed afterwards."""
    chromium_or_skip()
    driver, profile = start_browser()
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def home_dir(tmp_path: Path) -> Path:
    """A fresh, empty home for tests that must start nothing."""
    return tmp_path / "home"
