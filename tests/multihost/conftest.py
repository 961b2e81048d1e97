"""Fixtures for the multihost tests: a real etcd per test (tmp data dir, free ports)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_helpers import EtcdServer, etcd_binary


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A running etcd on free loopback ports; killed after the test."""
    etcd_binary()
    (tmp_path / "etcd").mkdir()
    server = EtcdServer(tmp_path / "etcd" / "data").start()
    yield server
    server.kill()
