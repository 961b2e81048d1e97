"""Fixtures for the workload process layer: every spawned workload is stopped after the test."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from process_helpers import Spawner, is_our_zombie

from mycelium.node.process import Workload, spawn


@pytest.fixture
def spawned(tmp_path: Path) -> Iterator[Spawner]:
    """``spawned(argv)`` starts a workload in tmp_path and guarantees it is gone afterwards."""
    started: list[Workload] = []

    def start(argv: Sequence[str], env: dict[str, str] | None = None) -> Workload:
        workload = spawn(argv, tmp_path, env or {}, tmp_path / "logs" / "out.log")
        started.append(workload)
        return workload

    yield start
    for workload in started:
        workload.terminate(grace=0.5)
    assert [w.pid for w in started if is_our_zombie(w.pid)] == [], "unreaped children"
