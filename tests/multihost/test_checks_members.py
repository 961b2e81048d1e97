"""Readiness across members: an instance whose readiness check fails on one member leaves the
routes of every member's edge (its ``serving`` travels through etcd) and comes back with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_helpers import EtcdServer, MemberProcess, answers, two_homes, wait_for

from mycelium.spores import publish

CHECKER = Path(__file__).resolve().parents[1] / "checks" / "workloads" / "checker"


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """Home a (publishes the checker with a readiness check) and home b (trusts a's key)."""
    with two_homes(tmp_path) as (a, b):
        digest = publish(a, binary=CHECKER, manifest={"name": "ready", "version": "1.0.0",
                         "checks": [{"type": "http", "role": "readiness", "path": "/ready",
                                     "interval": 0.2, "timeout": 0.5, "failures": 1}]})
        yield a.root, b.root, digest


def answered(edge: str, n: int) -> set[str]:
    """The instances that answered ``n`` GETs of the app through ``edge``."""
    return answers(f"{edge}/ready/", "instance", n)


@pytest.mark.timeout(90)
def test_an_unready_instance_leaves_every_member_s_routes(
        etcd: EtcdServer, homes: tuple[Path, Path, str]) -> None:
    home_a, home_b, digest = homes
    a = MemberProcess(home_a, etcd.url, "a", nodes=1)
    b = MemberProcess(home_b, etcd.url, "b", nodes=1)
    try:
        a.client.request("deploy", app="ready", digest=digest, min=2, max=2)
        ready = wait_for(lambda: len(r := b.instances("ready")) == 2 and r, 30.0, "2 Ready")
        ids = {i["id"] for i in ready}
        wait_for(lambda: answered(b.url, 6) == ids, 10.0, "b's edge routes to both")
        on_a = next(i for i in ready if i["node"].startswith("a"))
        work = (Path(on_a["dir"]) if on_a.get("dir")  # isolated: maybe outside the home
                else Path(home_a) / "instances" / on_a["id"].replace("/", "_") / "app")
        flag = work / "unready"
        flag.touch()
        wait_for(lambda: answered(b.url, 6) == ids - {on_a["id"]}, 10.0,
                 "a's unready instance out of b's routes")
        seen = {i["id"]: i for i in b.instances("ready")}
        assert seen[on_a["id"]]["serving"] is False and seen[on_a["id"]]["pid"] == on_a["pid"]
        flag.unlink()
        wait_for(lambda: answered(b.url, 6) == ids, 10.0, "back in b's routes")
    finally:
        a.stop()
        b.stop()
