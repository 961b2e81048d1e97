"""An exec check runs with exactly the workload's environment: the same variables with the
same values (PATH included, which the spawn reorders), not the mesh's plus the workload's.

The mesh runs with a PATH that does not start with its interpreter's directory, so the
workload's PATH (interpreter first) differs from the mesh's and a check given the mesh's
environment would show it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mesh_helpers import ENV, MeshProcess, cli, wait_until

from tests.meshkit import stopped_cleanly


@pytest.fixture
def odd_path_mesh(home: Path) -> Iterator[MeshProcess]:
    """A one-node mesh whose PATH leads with a directory other than its interpreter's."""
    bindir = os.path.dirname(sys.executable)
    rest = [p for p in ENV.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    env = {**ENV, "PATH": os.pathsep.join(["/usr/bin", *rest, bindir])}
    proc = MeshProcess(home, nodes=1, env=env)
    with stopped_cleanly(proc, home):
        yield proc


def read_json(path: Path) -> dict[str, Any] | None:
    """The file's JSON, or None while it is not written yet (both sides write then rename)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


@pytest.mark.timeout(120)
def test_an_exec_check_sees_exactly_the_workloads_environment(
        odd_path_mesh: MeshProcess, digests: dict[str, str]) -> None:
    mesh = odd_path_mesh
    assert cli(mesh.home, "deploy", "envdump", digests["envdump"]).returncode == 0
    (inst,) = mesh.ready("envdump", 1)
    app_dir = mesh.home / "instances" / str(inst["id"]).replace("/", "_") / "app"
    workload = wait_until(lambda: read_json(app_dir / "workload.env"), 10, "the workload's env")
    check = wait_until(lambda: read_json(app_dir / "check.env"), 10, "the check's env")
    assert workload["FROM_MANIFEST"] == "yes" and workload["MYCELIUM_INSTANCE"] == inst["id"]
    # the spawn put the interpreter first: not the mesh's PATH (which leads with /usr/bin)
    assert workload["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert check == workload
