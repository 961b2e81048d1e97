"""An exec check runs with exactly the workload's environment: the same variables with the
same values (PATH included, which the spawn reorders), not the mesh's plus the workload's.

The mesh runs with a PATH that does not start with its interpreter's directory, so the
workload's PATH (interpreter first, or built from scratch when the workload is isolated)
differs from the mesh's and a check given the mesh's environment would show it.
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


def odd_path() -> str:
    """The test environment's PATH with /usr/bin first and the interpreter's directory last."""
    bindir = os.path.dirname(sys.executable)
    rest = [p for p in ENV.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    return os.pathsep.join(["/usr/bin", *rest, bindir])


@pytest.fixture
def odd_path_mesh(home: Path) -> Iterator[MeshProcess]:
    """A one-node mesh whose PATH leads with a directory other than its interpreter's."""
    proc = MeshProcess(home, nodes=1, env={**ENV, "PATH": odd_path()})
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
    app_dir = (Path(inst["dir"]) if inst.get("dir")  # isolated: where its uid can write
               else mesh.home / "instances" / str(inst["id"]).replace("/", "_") / "app")
    workload = wait_until(lambda: read_json(app_dir / "workload.env"), 10, "the workload's env")
    check = wait_until(lambda: read_json(app_dir / "check.env"), 10, "the check's env")
    assert workload["FROM_MANIFEST"] == "yes" and workload["MYCELIUM_INSTANCE"] == inst["id"]
    # not the mesh's PATH: the spawn put the interpreter first, or an isolated workload's is built
    assert workload["PATH"] != odd_path()
    assert check == workload
