"""Fixtures for the health-check tests: the checker workload published under several
manifests (once per session), and a fresh home with a quick config per mesh."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "mesh"))

from mesh_helpers import MeshProcess, digests, home  # noqa: E402, F401  (shared fixtures)

from tests.meshkit import published, stopped_cleanly  # noqa: E402

CHECKER = HERE / "workloads" / "checker"

CONFIG = """\
[instance]
stop_grace = 2.0
[restart]
backoff_base = 0.05
backoff_cap = 1.0
intensity = 50
[node]
exec_checks_parallel = 2
"""

FAST = {"interval": 0.2, "timeout": 0.5, "failures": 1}
DUMP_ENV = ("import json, os; json.dump(dict(os.environ), open('check.tmp', 'w')); "
            "os.replace('check.tmp', 'check.env')")  # an exec check that writes its environment
MANIFESTS: dict[str, dict[str, Any]] = {
    "ready": {"name": "ready", "version": "1.0.0", "checks": [
        {"type": "http", "role": "readiness", "path": "/ready", **FAST}]},
    "live": {"name": "live", "version": "1.0.0", "checks": [
        {"type": "http", "role": "liveness", "path": "/live", "name": "alive",
         "interval": 0.2, "timeout": 0.5, "failures": 2}]},
    "exec": {"name": "exec", "version": "1.0.0", "checks": [
        {"type": "exec", "role": "readiness", "name": "file",
         "command": ["/bin/sh", "-c", "if [ -e unready ]; then echo not yet; exit 3; fi"],
         **FAST},
        {"type": "tcp", "role": "liveness", "interval": 0.5}]},
    "envdump": {"name": "envdump", "version": "1.0.0",
                "env": {"CHECKER_DUMP_ENV": "workload.env", "FROM_MANIFEST": "yes"},
                "checks": [{"type": "exec", "role": "readiness", "name": "dump",
                            "command": [sys.executable, "-c", DUMP_ENV], **FAST}]},
    "notify": {"name": "notify", "version": "1.0.0", "env": {"CHECKER_READY_DELAY": "0.3"},
               "checks": [{"type": "notify", "watchdog": 1.0}]},
    "slowready": {"name": "slowready", "version": "1.0.0", "env": {"CHECKER_READY_DELAY": "60"},
                  "checks": [{"type": "notify"}]},
    "flood": {"name": "flood", "version": "1.0.0", "env": {"CHECKER_FLOOD": "10000"},
              "checks": [{"type": "notify"}]},
}


@pytest.fixture(scope="session")
def spores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A template home with a key, the test config and every checker spore published."""
    root = tmp_path_factory.mktemp("checkstemplate") / "home"
    return root, published(root, {key: (CHECKER, manifest) for key, manifest in MANIFESTS.items()},
                           CONFIG)


@pytest.fixture
def mesh(home: Path) -> Iterator[MeshProcess]:  # noqa: F811  (the shared home fixture)
    """A running 2-node mesh on its own home and edge port; stopped and checked afterwards."""
    proc = MeshProcess(home, nodes=2)
    with stopped_cleanly(proc, home):
        yield proc
