"""Fixtures for the spore tests: a home with a signing key, a small binary and its manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.signing import SigningKey

from mycelium.home import Home
from mycelium.spores import keygen, load_signing_key


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """A fresh home whose ``default`` key exists and is trusted."""
    h = Home(tmp_path / "home")
    keygen(h)
    return h


@pytest.fixture
def key(home: Home) -> SigningKey:
    """The home's trusted signing key."""
    return load_signing_key(home)


@pytest.fixture
def binary_bytes() -> bytes:
    """A small executable workload."""
    return b"#!/bin/sh\necho hello from a spore\nexit 0\n" + bytes(range(256)) * 2


@pytest.fixture
def binary(tmp_path: Path, binary_bytes: bytes) -> Path:
    """The workload on disk, executable."""
    path = tmp_path / "hello-bin"
    path.write_bytes(binary_bytes)
    path.chmod(0o755)
    return path


@pytest.fixture
def manifest_file(tmp_path: Path) -> Path:
    """A minimal valid input manifest."""
    path = tmp_path / "manifest.json"
    path.write_text('{"name": "hello", "version": "1.0.0"}')
    return path
