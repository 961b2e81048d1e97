"""``apply`` in a multi-machine mesh: two members (processes, homes) on one real etcd."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "multihost"))

from etcd_helpers import EtcdServer, MemberProcess, etcd_binary, kill_workloads, wait_for
from files import HELLO, manifest, table, write
from mesh_helpers import cli

from mycelium.home import Home
from mycelium.operator.client import ControlError
from mycelium.spores import keygen, trust


@pytest.fixture
def members(tmp_path: Path) -> Iterator[tuple[MemberProcess, MemberProcess]]:
    """Members a and b (b trusts a's key) on a fresh etcd; everything stopped afterwards."""
    etcd_binary()
    (tmp_path / "etcd").mkdir()
    server = EtcdServer(tmp_path / "etcd" / "data").start()
    a_home, b_home = Home(tmp_path / "a").ensure(), Home(tmp_path / "b").ensure()
    trust(b_home, keygen(a_home))
    started: list[MemberProcess] = []
    try:
        started.append(MemberProcess(a_home.root, server.url, "a"))
        started.append(MemberProcess(b_home.root, server.url, "b"))
        yield started[0], started[1]
    finally:
        for member in started:
            assert member.stop() == 0
        for root in (a_home.root, b_home.root):
            kill_workloads(root)
        server.kill()


@pytest.mark.timeout(120)
def test_an_apply_through_one_member_is_unchanged_through_the_other_and_stale_views_are_refused(
        members: tuple[MemberProcess, MemberProcess], tmp_path: Path) -> None:
    a, b = members
    file = write(tmp_path / "mesh.toml", table("hello", HELLO, manifest(tmp_path, "hello"),
                                                max=3))
    run = cli(a.home, "apply", str(file))
    assert run.returncode == 0, run.stderr
    wait_for(lambda: len(b.instances("hello")) == 3, 30.0, "3 Ready seen through b")
    # b fetched the spore (every member prefetches planned spores): the same file is unchanged
    wait_for(lambda: cli(b.home, "plan", str(file)).stdout.startswith("hello  = unchanged"),
             30.0, "b to plan the file as unchanged")
    seen = next(d for d in a.client.request("desired")["apps"] if d["app"] == "hello")
    digest = seen["digest"]
    deployed = cli(b.home, "deploy", "hello", digest, "--max", "2", "--no-wait")
    assert deployed.returncode == 0, deployed.stderr
    # an apply through a computed before b's deploy: refused whether a's view already has it
    # (the fabric's check) or not yet (etcd's compare in the batch's transaction)
    with pytest.raises(ControlError, match="the mesh changed since this apply read it") as caught:
        a.client.request("apply", plans=[{"app": "hello", "digest": digest, "max": 1}],
                         stops=[], expect={"hello": seen["generation"]})
    assert caught.value.exit_code == 1
    wait_for(lambda: all(d["max"] == 2 for d in a.status()["apps"] if d["app"] == "hello"),
             10.0, "b's deploy to stand, seen through a")
